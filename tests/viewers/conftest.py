"""Viewer test fixtures: a virtual X display for the interactive-window tests."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from viewers import render


@pytest.fixture(scope="module")
def xvfb():
    """A virtual X display (``Xvfb``, which picks a free display number), as ``":N"``.

    Skips when Xvfb is not installed (``make setup`` installs it), when Open3D cannot render here (no
    Vulkan or EGL driver: no window either), when Pillow cannot take X screenshots, or when the server
    does not start.
    """
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb, or make setup)")
    if not render.headless_available():
        pytest.skip("Open3D cannot render here (no Vulkan or EGL driver): no window either")
    from PIL import features

    if not features.check("xcb"):
        pytest.skip("Pillow was built without XCB: cannot take a screenshot")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                              pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    if not number:
        server.kill()
        server.wait()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(10)


@pytest.fixture
def stop_window():
    """``stop_window(process)``: SIGTERM a window process and wait; its exit code, None when it had to be killed."""
    return _stop_window


def _stop_window(process: subprocess.Popen, timeout: float = 15.0) -> int | None:
    process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None
