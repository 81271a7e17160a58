"""Configuration: Kconfig loading, the typed settings and their fields, CLI overrides, seed-defconfig migration."""
