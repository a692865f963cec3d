"""Request dependencies, as ``Annotated`` aliases the routes declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assistant.config import Settings
from assistant.service.state import Services


def settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def services_dep(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


SettingsDep = Annotated[Settings, Depends(settings_dep)]
ServicesDep = Annotated[Services, Depends(services_dep)]
