"""Pushes a component to a ClawCage registry with oras-py, in the CNCF Wasm
OCI layout, and pulls it back.

Usage: oras_round_trip.py <host:port> <repository:tag> <component.wasm> <config.json> <pull-dir>
The token comes from CLAWCAGE_TOKEN (the password of HTTP Basic).
"""

import os
import shutil
import sys

import oras.client


def main() -> None:
    host, target, component, config, pull_dir = sys.argv[1:6]
    # HTTP Basic: any user name, the ClawCage token as the password.
    client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    client.auth.set_basic_auth("publisher", os.environ["CLAWCAGE_TOKEN"])
    # oras-py names layers by the file's path relative to the working
    # directory: push from the component's directory.
    os.chdir(os.path.dirname(os.path.abspath(component)))
    name = os.path.basename(component)
    response = client.push(
        files=[f"{name}:application/wasm"],
        target=f"{host}/{target}",
        manifest_config=f"{config}:application/vnd.wasm.config.v0+json",
        disable_path_validation=True,
    )
    response.raise_for_status()
    shutil.rmtree(pull_dir, ignore_errors=True)
    os.makedirs(pull_dir)
    files = client.pull(target=f"{host}/{target}", outdir=pull_dir)
    print("\n".join(files))


if __name__ == "__main__":
    main()
