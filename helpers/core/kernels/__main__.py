"""``python -m helpers.core.kernels build``: compile the one-pass CPU kernel now (``make install`` runs it); never
fails."""

from __future__ import annotations

import sys

from helpers.core import kernels


def main(arguments: list[str]) -> int:
    if arguments != ["build"]:
        print("usage: python -m helpers.core.kernels build", file=sys.stderr)
        return 2
    try:
        built = kernels.build()
    except Exception as error:  # no compiler, another platform: the two-call route runs instead
        print(
            f"helpers.core.kernels: the one-pass CPU kernel could not be built ({error}); the two-call route will run"
        )
        return 0
    route = "MKL sgemm" if built.uses_blas() else "plain-loop gemm"
    folder = kernels.BUILD_ROOT / kernels.build_name()
    print(f"helpers.core.kernels: {kernels.build_name()} built in {folder} ({route})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
