"""Install Debian's Chromium for the browser tests when it is missing.

The tests drive the system's Chromium through Playwright; no tool is allowed
to download a browser of its own. Without root or apt-get, this only says
what is missing, and the browser tests are skipped (REQUIRE_BROWSER=1 makes
them fail instead, as CI does).
"""

import os
import shutil
import subprocess
import sys

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def main():
    if os.path.exists(CHROMIUM):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(
            f"Chromium not found at {CHROMIUM}; browser tests will be skipped. "
            "Install Debian's chromium package (or set CHROMIUM_PATH) to run them.",
            file=sys.stderr,
        )
        return

    print("Installing Chromium from Debian's packages for the browser tests…")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        check=True,
        env=env,
    )


if __name__ == "__main__":
    main()
