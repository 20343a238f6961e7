"""``manage.py pdauth_keeper``."""
