"""The floor every component stands on: the device and its precision (device.py), the choices a
run's hardware offers (options.py) and the processes of one run (distributed.py). Nothing here
knows a run's settings."""
