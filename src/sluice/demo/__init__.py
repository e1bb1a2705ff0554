"""``sluice demo``: sample data, the demo pipelines end to end, a summary, then the service."""

from sluice.demo.run import run_demo

__all__ = ["run_demo"]
