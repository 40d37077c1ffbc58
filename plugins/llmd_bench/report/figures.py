"""A matplotlib figure as the PNG bytes a report embeds and writes: one place for every plot's layout and size."""

from __future__ import annotations

import io
from typing import Any


def png(fig: Any, dpi: int = 90) -> bytes:
    """The figure laid out, rendered at `dpi` and closed (pyplot keeps every open figure until it is)."""
    import matplotlib.pyplot as plt  # deferred: loads matplotlib

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
