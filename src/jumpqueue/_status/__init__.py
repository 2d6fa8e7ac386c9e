"""The status report behind the status page and the Prometheus collector.

- `report`: this process's snapshot and the other workers' files, summed.
- `families`: the report as Prometheus metric families, and their OpenMetrics text.
- `text`: the report as text laid out like PHP-FPM's status page, and as JSON.
- `page.html`: the live HTML page (it polls the JSON).
"""

from __future__ import annotations

from .families import Family, cumulative, families, openmetrics
from .report import collect
from .text import as_json, as_text

__all__ = ["Family", "as_json", "as_text", "collect", "cumulative", "families", "openmetrics"]
