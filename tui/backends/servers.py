"""The servers table of the settings and the ``server:NAME[/MODEL]`` model spec."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tui.config import Settings

REMOTE_PREFIX = "server:"
DEFAULT_TIMEOUT_S = 120.0
IMAGE_APIS = ("auto", "sdcpp", "openai")
"""What a server's image_api may say."""
"""How long a server may stay silent (connecting, or between two streamed parts)."""


class BackendError(Exception):
    """A server spec or configuration that cannot be used, in one line."""


@dataclass(frozen=True)
class ServerConfig:
    """One entry of the settings' ``servers`` table."""

    name: str
    url: str
    """Base URL of the OpenAI-compatible API, e.g. http://gpu-box:8080/v1."""
    api_key_env: str = ""
    """Name of the environment variable holding the API key ('' when none is needed)."""
    model: str = ""
    """Model id to ask for ('' for the first one the server lists)."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    api_key_file: str = ""
    """Path of the 0600 file holding a key typed once ('' when none was typed)."""
    image_api: str = "auto"
    """Which image API the server speaks: 'sdcpp' (stable-diffusion.cpp's native job API),
    'openai' (/v1/images/generations and /v1/images/edits), or 'auto' (ask the server)."""

    def api_key(self) -> str:
        """The key: the named environment variable first, then the key file.

        BackendError (one line) when a key is configured but neither gives one.
        """
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if key:
                return key
            if not self.api_key_file:
                raise BackendError(
                    f"server {self.name}: the environment variable {self.api_key_env}"
                    " that should hold its API key is not set"
                )
        if self.api_key_file:
            from tui.backends.keys import KeyFileError, read_key

            try:
                return read_key(Path(self.api_key_file))
            except KeyFileError as error:
                raise BackendError(f"server {self.name}: {error}") from None
        return ""

    def key_source(self) -> str:
        """Where the key comes from, for messages (never the key itself)."""
        if self.api_key_env and os.environ.get(self.api_key_env):
            return f"the key from ${self.api_key_env}"
        if self.api_key_file:
            return f"the key in {self.api_key_file}"
        return "no API key (set api_key_env or add the server with --api-key)"


def parse_remote_spec(spec: str | None) -> tuple[str, str] | None:
    """(server name, model id or '') for a ``server:NAME[/MODEL]`` spec; None for a local one."""
    if not spec or not spec.startswith(REMOTE_PREFIX):
        return None
    name, _, model = spec[len(REMOTE_PREFIX) :].partition("/")
    return name.strip(), model.strip()


def remote_spec(name: str, model: str = "") -> str:
    """The model spec naming ``model`` (or the server's default) on server ``name``."""
    return f"{REMOTE_PREFIX}{name}/{model}" if model else f"{REMOTE_PREFIX}{name}"


def server_config(name: str, settings: Settings) -> ServerConfig:
    """The configured server ``name``; BackendError (one line) when missing or unusable."""
    entry = settings.servers.get(name)
    if not name:
        raise BackendError("no server named: write server:NAME or server:NAME/MODEL")
    if entry is None:
        known = ", ".join(sorted(settings.servers)) or "none is configured"
        raise BackendError(f"no server named {name!r} in the settings ({known})")
    url = str(entry.get("url", "")).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BackendError(f"server {name}: url {url!r} is not an http:// or https:// address")
    try:
        timeout = float(entry.get("timeout_s", DEFAULT_TIMEOUT_S))
    except (TypeError, ValueError):
        raise BackendError(f"server {name}: timeout_s is not a number") from None
    if timeout <= 0:
        raise BackendError(f"server {name}: timeout_s must be more than 0")
    image_api = str(entry.get("image_api", "auto")).strip() or "auto"
    if image_api not in IMAGE_APIS:
        raise BackendError(
            f"server {name}: image_api {image_api!r} is not one of {', '.join(IMAGE_APIS)}"
        )
    return ServerConfig(
        name=name,
        url=url,
        api_key_env=str(entry.get("api_key_env", "")).strip(),
        model=str(entry.get("model", "")).strip(),
        timeout_s=timeout,
        api_key_file=str(entry.get("api_key_file", "")).strip(),
        image_api=image_api,
    )
