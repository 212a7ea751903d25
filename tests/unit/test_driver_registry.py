"""Drivers are found by name in the `herdsman.drivers` entry points; a name nobody registered is
refused with the names that are."""

from __future__ import annotations

from pathlib import Path

import pytest

from herdsman.drivers.docker import DockerDriver
from herdsman.drivers.process import ProcessDriver
from herdsman.drivers.registry import driver_class, driver_names, make_driver
from herdsman.drivers.swarm import SwarmDriver
from herdsman.errors import DriverError
from herdsman.image.oci import ImageStore


def test_the_built_in_drivers_are_registered() -> None:
    assert {"process", "docker", "swarm"} <= set(driver_names())
    assert driver_class("process") is ProcessDriver
    assert driver_class("docker") is DockerDriver
    assert driver_class("swarm") is SwarmDriver


def test_an_unknown_driver_names_the_known_ones() -> None:
    with pytest.raises(DriverError) as caught:
        driver_class("kubernetes")
    assert "docker" in caught.value.hint and "process" in caught.value.hint


def test_a_driver_is_made_from_its_environment(tmp_path: Path) -> None:
    driver = make_driver("process", tmp_path / ".herd", ImageStore(tmp_path / "images"), None)
    assert isinstance(driver, ProcessDriver) and driver.name == "process"
