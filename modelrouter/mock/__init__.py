"""Mock LLM provider (``modelrouter mock-provider``) for tests and load tests."""

from modelrouter.mock.faults import Faults, add_mock_arguments, faults_from_args, parse_spec
from modelrouter.mock.server import create_mock_app, run_mock, start_mock

__all__ = [
    "Faults",
    "add_mock_arguments",
    "create_mock_app",
    "faults_from_args",
    "parse_spec",
    "run_mock",
    "start_mock",
]
