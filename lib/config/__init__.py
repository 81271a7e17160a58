"""Configuration in and out of the settings tree (lib/train/settings.py): Kconfig loading (kconfig.py, load.py), CLI overrides, sweep files, seed-defconfig migration."""
