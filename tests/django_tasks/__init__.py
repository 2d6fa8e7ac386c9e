"""The Django Tasks backend (`jumpqueue.contrib.django_tasks`), on Django 6 and later."""
