"""Run many gcloud command lines in one gcloud process: each costs milliseconds instead of seconds.

    PYTHON tests/gcloud_batch_parse.py SDK_ROOT/lib < commands.json > results.json

Run by gcloud's own Python (see test_deploy.py), with an empty CLOUDSDK_CONFIG. Input: a JSON list of
argument lists (without the leading "gcloud"). Output: a JSON list of {"argv", "code", "stderr"}: what
``gcloud ARGV`` exits with and prints (stdout and stderr together), as the launcher's ``cli.Execute`` gives
them. It uses gcloud's internals (gcloud.py, gcloud_main.CreateCLI): if they change, this exits non-zero
and the test falls back to one gcloud process per command.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile


def main() -> int:
    sdk_lib = sys.argv[1]
    sys.path.insert(0, sdk_lib)
    sys.path.insert(0, os.path.join(sdk_lib, "third_party"))
    import gcloud  # the launcher module: puts the bundled packages first, as `gcloud` does

    sys.path = gcloud.reorder_sys_path(sys.path)
    from googlecloudsdk import gcloud_main

    cli = gcloud_main.CreateCLI([])
    results = []
    for argv in json.load(sys.stdin):
        with tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            # gcloud's logger holds the streams: capture at the descriptors (stdout too, to keep ours JSON).
            os.dup2(err.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                cli.Execute(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:
                code = -1
                print(f"unexpected {exc!r}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, copy in zip((1, 2), saved, strict=True):
                    os.dup2(copy, fd)
                    os.close(copy)
            err.seek(0)
            results.append({"argv": argv, "code": code, "stderr": err.read().decode(errors="replace")})
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
