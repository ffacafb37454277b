"""Load generation (`modelrouter bench`) and the comparison suite behind `make bench`."""

from modelrouter.bench.command import add_bench_arguments, run_bench
from modelrouter.bench.loadgen import LoadResult, chat_body, percentiles, run_load

__all__ = ["LoadResult", "add_bench_arguments", "chat_body", "percentiles", "run_bench", "run_load"]
