"""Django management commands of pdauth's Django app."""
