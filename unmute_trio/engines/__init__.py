"""Local CPU speech engines served behind the moshi-server protocols (``unmute-trio engines``).

Nothing here is imported by the server itself: the engines run in their own process and the
server reaches them over the same sockets and wire formats as a GPU moshi-server.
"""


def local_build_info(describe: str) -> dict[str, str]:
    """``GET /api/build_info`` of a local engine: moshi-server's ten keys, with
    ``git_describe`` naming the engine (``/v1/health`` reports it)."""
    from unmute_trio import __version__
    from unmute_trio.testing.sim_base import BUILD_INFO

    return {**BUILD_INFO, "git_branch": "local-engine", "git_describe": f"{describe}-{__version__}"}
