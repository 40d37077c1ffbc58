"""`guidellm mock-server` (the local runtime's stand-in for vLLM), GuideLLM's own code, started without PyTorch.

The mock server tokenizes with GuideLLM's MockTokenizer (guidellm/mock_server/utils.py @v0.8.1, a transformers
PreTrainedTokenizer) and never uses PyTorch, but transformers imports PyTorch whenever it is installed
(transformers/utils/import_utils.py is_torch_available @5.24.0), and GuideLLM's benchmark run needs it installed.
Hidden here, a mock server is ready in 1.6 s instead of 3.5 s (2 cores): every local deploy starts one per replica.

Run as a script, with no llmd_bench import: `python guidellm_mock_server.py mock-server --port ...`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SCRIPT = Path(__file__)


def main(argv: list[str]) -> int:
    # importlib.util.find_spec("torch") is None for a module set to None: transformers takes PyTorch as absent
    sys.modules["torch"] = None  # type: ignore[assignment]
    # not transformers' "PyTorch was not found" advice in every server log: its absence is deliberate
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from guidellm.__main__ import cli  # GuideLLM's command line, as its `guidellm` script runs it

    return int(cli.main(args=argv, prog_name="guidellm", standalone_mode=True) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
