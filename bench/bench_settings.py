"""Settings for the benchmarks only: the product's settings with the benchmark's URL conf (which
adds bench/naive.py's endpoints) and, for what-if runs, product settings overridden from
BENCH_SETTINGS_OVERRIDES (a JSON object, e.g. {"CELERY_DB_REUSE_MAX": 1000}; set by
`bench/pipeline.py --setting NAME=VALUE`). Never used by the product."""

import json
import os

from project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bench_urls"

globals().update(json.loads(os.environ.get("BENCH_SETTINGS_OVERRIDES") or "{}"))
