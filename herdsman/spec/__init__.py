"""herd.toml -> frozen models: the one place raw configuration is read and validated."""

from herdsman.spec.durations import format_duration, parse_duration
from herdsman.spec.load import STACK_FILE, Project, find_stack_file, herd_home, load_project, parse_stack
from herdsman.spec.models import CopyStep, HealthCheck, ImageRecipe, Route, Service, Stack, Volume

__all__ = [
    "STACK_FILE",
    "CopyStep",
    "HealthCheck",
    "ImageRecipe",
    "Project",
    "Route",
    "Service",
    "Stack",
    "Volume",
    "find_stack_file",
    "format_duration",
    "herd_home",
    "load_project",
    "parse_duration",
    "parse_stack",
]
