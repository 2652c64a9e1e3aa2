"""Example backend functions, loaded by default (``WORKER_MODULES=workers.examples``).

They show the three kinds of work a backend function does that a browser must not:

- ``get_current_time``: plain computation;
- ``get_weather``: a call to a third-party API with a key only the worker holds (``WEATHER_API_KEY``);
- ``add_note`` / ``list_notes``: reads and writes in the backend's own data store (Redis here), per caller
  (``ctx.principal``, the identity the gateway verified);
- ``find_restaurants``: a slow lookup, with a filler line and progress reports while the user waits.

``get_current_time`` and ``find_restaurants`` use the plain form (typed parameters, docstring), the others
the model form (a pydantic model of the arguments).
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from shared import keys
from workers.registry import CallContext, FunctionError, function
from workers.secrets import secret

# --- time -------------------------------------------------------------------------------------------------


@function(timeout=3.0, idempotent=True)
def get_current_time(timezone: Annotated[str, Field(max_length=64)] = "UTC") -> dict[str, str]:
    """Current local time in a timezone

    Args:
        timezone: IANA timezone name, e.g. Europe/Paris
    """
    try:
        now = datetime.now(ZoneInfo(timezone))
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name like "Europe" is a directory
        raise FunctionError(f"Unknown timezone: {timezone}. Use an IANA name such as Europe/Paris.") from None
    return {"time": now.strftime("%H:%M:%S"), "timezone": timezone, "iso": now.isoformat(timespec="seconds")}


# --- weather (a third-party API with a worker-only key) ---------------------------------------------------

OPENWEATHER_URL = "https://api.openweathermap.org/data/2.5/weather"
WEATHER_TIMEOUT = 5.0
HTTP_TIMEOUT = 3.5
"""Below the function's timeout, so a slow API gives "unavailable" rather than a timeout."""
DEMO_CONDITIONS = ("clear sky", "few clouds", "overcast", "light rain", "heavy rain", "snow", "fog", "thunderstorm")


class WeatherArgs(BaseModel):
    location: str = Field(min_length=1, max_length=100, description="City name, e.g. Paris or San Francisco")
    unit: Literal["celsius", "fahrenheit"] = Field(default="celsius", description="Temperature unit")


@function(description="Current weather for a city", timeout=WEATHER_TIMEOUT, idempotent=True)
def get_weather(args: WeatherArgs) -> dict[str, Any]:
    """Live data from OpenWeatherMap, or deterministic offline data when the key starts with "demo".

    ``key_fingerprint`` lets a test prove the worker used the key it was given, without the key leaving it.
    """
    key = secret("WEATHER_API_KEY", default="demo")
    report = _demo_weather(args) if key.startswith("demo") else _openweather(args, key)
    report["key_fingerprint"] = hashlib.sha256(key.encode()).hexdigest()[:12]
    return report


def _demo_weather(args: WeatherArgs) -> dict[str, Any]:
    digest = hashlib.sha256(args.location.strip().lower().encode()).digest()
    celsius = round(-5 + digest[1] / 255 * 35, 1)
    return {
        "location": args.location,
        "temperature": celsius if args.unit == "celsius" else round(celsius * 9 / 5 + 32, 1),
        "unit": args.unit,
        "condition": DEMO_CONDITIONS[digest[0] % len(DEMO_CONDITIONS)],
        "humidity": 30 + digest[2] % 61,
        "source": "offline demo data",
    }


def _openweather(args: WeatherArgs, key: str) -> dict[str, Any]:
    query = urllib.parse.urlencode(
        {"q": args.location, "appid": key, "units": "metric" if args.unit == "celsius" else "imperial"}
    )
    try:
        with urllib.request.urlopen(f"{OPENWEATHER_URL}?{query}", timeout=HTTP_TIMEOUT) as response:
            data = json.load(response)
        return {
            "location": data.get("name") or args.location,
            "temperature": data["main"]["temp"],
            "unit": args.unit,
            "condition": data["weather"][0]["description"],
            "humidity": data["main"]["humidity"],
            "source": "OpenWeatherMap",
        }
    except urllib.error.HTTPError as exc:
        # Never chain or quote the exception: its text includes the URL, and the URL includes the key.
        if exc.code == 404:
            raise FunctionError(f"Unknown location: {args.location}") from None
        raise FunctionError("Weather service unavailable") from None
    except Exception:
        raise FunctionError("Weather service unavailable") from None


# --- notes (the backend's own data store) -----------------------------------------------------------------

MAX_NOTES = 1000
"""Notes kept per caller; older ones are dropped so a chatty agent cannot grow the list without bound."""
ANONYMOUS = "anonymous"
"""Whose notes they are when the gateway requires no credentials (``ctx.principal`` is empty): everyone's."""


class AddNoteArgs(BaseModel):
    text: str = Field(min_length=1, max_length=500, description="The note to save")


class ListNotesArgs(BaseModel):
    limit: int = Field(default=10, ge=1, le=100, description="How many of the latest notes to return")


def notes_key(principal: str) -> str:
    """List key: one caller's notes. The key is the example's own, beside it rather than in ``shared.keys``
    (which names what the gateway and the workers store), under the project's prefix like everything else."""
    return f"{keys.PREFIX}:data:notes:{principal}"


def callers_notes(ctx: CallContext) -> str:
    """The caller's notes, keyed by who the gateway verified. Not an argument: the LLM (and so whoever talks to
    it) could name anybody's notes."""
    return notes_key(ctx.principal or ANONYMOUS)


@function(description="Save a short note for later", timeout=3.0, side_effects=True)
def add_note(args: AddNoteArgs, ctx: CallContext) -> dict[str, Any]:
    note = json.dumps({"text": args.text, "added_at": datetime.now().astimezone().isoformat(timespec="seconds")})
    with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.rpush(callers_notes(ctx), note)
        pipe.ltrim(callers_notes(ctx), -MAX_NOTES, -1)
        count, _ = pipe.execute()
    return {"saved": True, "count": min(count, MAX_NOTES)}


@function(description="List the latest saved notes", timeout=3.0, idempotent=True)
def list_notes(args: ListNotesArgs, ctx: CallContext) -> dict[str, Any]:
    raw = ctx.redis.lrange(callers_notes(ctx), -args.limit, -1)
    notes = [json.loads(item) for item in raw]
    return {"notes": notes, "count": len(notes)}


# --- restaurants (a slow lookup: a filler while the user waits) -------------------------------------------

SEARCH_SECONDS = 2.5
"""How long the demo search takes: longer than the filler delay, so the agent says the filler first."""
SEARCH_STEP = 0.25
DEMO_RESTAURANTS = ("Chez Marie", "The Blue Door", "Sakura", "Trattoria Roma", "El Patio", "Green Leaf", "Spice Route")


@function(
    timeout=6.0,
    idempotent=True,
    filler="One moment while I look that up.",
    filler_delay=1.0,
)
def find_restaurants(
    city: Annotated[str, Field(min_length=1, max_length=100)],
    cuisine: Annotated[str, Field(max_length=40)] = "any",
    *,
    ctx: CallContext,
) -> dict[str, Any]:
    """Find restaurants in a city (offline demo data; the search takes a few seconds).

    Args:
        city: City name, e.g. Paris
        cuisine: Kind of food, e.g. italian, or "any"
    """
    steps = round(SEARCH_SECONDS / SEARCH_STEP)
    for step in range(steps):
        if ctx.cancelled:  # nobody waits for the answer any more: stop searching
            break
        if step == steps // 2:
            ctx.progress(f"Still searching restaurants in {city}…")
        time.sleep(SEARCH_STEP)
    digest = hashlib.sha256(f"{city.strip().lower()}|{cuisine.strip().lower()}".encode()).digest()
    names = [DEMO_RESTAURANTS[(digest[i] + i) % len(DEMO_RESTAURANTS)] for i in range(3)]
    return {"city": city, "cuisine": cuisine, "restaurants": list(dict.fromkeys(names)), "source": "offline demo data"}
