"""A tiny Django project with Connect PagerDuty (pdauth) and a page listing incidents."""
