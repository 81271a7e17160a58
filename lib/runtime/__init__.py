"""The floor every component stands on: the device and its precision (device.py), the choices a
run's hardware offers (options.py), the processes of one run (distributed.py) and the runtime's
own settings (settings.py). Nothing here knows the rest of a run's settings."""
