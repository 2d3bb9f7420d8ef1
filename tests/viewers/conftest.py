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


@pytest.fixture
def magenta_window(xvfb):
    """``magenta_window(script, what)``: run the Python ``script`` (it opens a viewer window) on the virtual
    display, wait up to 60 s until more than 200 magenta-dominated pixels show on the screen, then close it.

    Fails naming ``what`` when nothing magenta appears, with the window's stderr when its process exits early,
    and when the window does not close on SIGTERM within 15 s.
    """
    import sys
    import time

    import numpy as np
    from PIL import ImageGrab

    def run(script: str, what: str) -> None:
        env = {**os.environ, "DISPLAY": xvfb}
        env.pop("WAYLAND_DISPLAY", None)
        window = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        red_blue = 0
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and window.poll() is None:
                shot = np.asarray(ImageGrab.grab(xdisplay=xvfb).convert("RGB")).astype(np.int32)
                # The window tone-maps colours, so look for magenta-dominated pixels rather than the exact colour.
                red_blue = int(((shot[..., 0] > shot[..., 1] + 40) & (shot[..., 2] > shot[..., 1] + 25)).sum())
                if red_blue > 200:
                    break
                time.sleep(0.2)
            assert window.poll() is None, f"the window process exited: {window.stderr.read().decode()[-2000:]}"
            assert red_blue > 200, f"no {what} visible in the window within 60 s"
        finally:
            code = _stop_window(window)
        assert code is not None, "the window did not close on SIGTERM within 15 s"

    return run
