"""Building what every command needs once, at the entry point."""

from __future__ import annotations

from bus.log import configure_logging
from bus.settings import Settings


def settings_from_env() -> Settings:
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    return settings
