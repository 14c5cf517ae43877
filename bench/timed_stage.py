#!/usr/bin/env python
"""Run one stage's ``main(argv)`` in this process and record its seconds after the imports, so a
bench can tell a stage's work from interpreter and torch start-up (each rank writes its own file).

    python [-m torch.distributed.run ...] bench/timed_stage.py OUT_PREFIX MODULE [STAGE ARGS...]

writes OUT_PREFIX.rank<RANK>.json: {"seconds": ..., "import_seconds": ..., "exit_code": ...}.
"""
import importlib
import json
import os
import sys
import time
from pathlib import Path

started = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if len(sys.argv) < 3:
    sys.exit(__doc__)
out, module_name, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.argv = [module_name, *argv]  # what the stage would see when run as a script

from mega_nerf.errors import cli_entry  # noqa: E402

module = importlib.import_module(module_name)
imported = time.perf_counter()
code = 0
try:
    result = cli_entry(module.main)(argv)
    code = result if isinstance(result, int) else 0
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
except BaseException:
    code = 1
    raise
finally:
    seconds = time.perf_counter() - imported
    Path(f"{out}.rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(
        {"seconds": seconds, "import_seconds": imported - started, "exit_code": code}))
sys.exit(code)
