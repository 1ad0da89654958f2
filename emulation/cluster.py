"""The Ray executor of ``streambed emulate --cluster ADDRESS``: each session is a Ray task.

A session task needs one unit of the custom resource ``netns_slot`` (declared per node,
``ray start --resources '{"netns_slot": 8}'``), so each node runs only as many sessions as its
cores keep within the link's tolerance (README, "Beyond one machine"). On its node a task finds
(or starts, once per node and run) a ``NodeServices`` actor: the origin on the content, and the
decision service unless ``--abr URL`` names a central one (reachable through Mahimahi's NAT
only; the netns link reaches its own node alone). It runs the session exactly as the local
executor does, into a scratch directory of its node, and returns the session's files; the
driver writes them into ``OUT`` where a local run would have. The traces, the content and the
model are read by path on every node: a shared filesystem, or the same path filled on each.

Ray retries a task whose node or worker died (``max_retries``) on another node; the session's
own attempts are the local executor's. Ctrl-C cancels the tasks (each tears its link down).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import signal
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from streambed.core.errors import ConfigError

log = logging.getLogger(__name__)

SLOT = "netns_slot"
"""The custom resource a session needs one unit of."""
NODE_RETRIES = 3
"""Ray's retries of a session whose node or worker process died."""


def connect(address: str) -> Any:
    """``ray.init`` on ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``; ``local``
    starts a one-node cluster here with one slot per core). Returns the ray module."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--cluster needs Ray: pip install 'streambed-abr[cluster]'") from None
    if not ray.is_initialized():
        if address == "local":
            import os

            cores = os.cpu_count() or 1
            ray.init(
                resources={SLOT: cores},
                include_dashboard=False,
                log_to_driver=False,
                namespace="streambed",
            )
        else:
            try:
                ray.init(address=address, log_to_driver=False, namespace="streambed")
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"--cluster {address}: {exc}") from None
    slots = ray.cluster_resources().get(SLOT, 0)
    if slots < 1:
        raise ConfigError(
            f"--cluster {address}: no node declares the {SLOT} resource (start each node with "
            f"ray start --resources '{{\"{SLOT}\": N}}')"
        )
    return ray


class NodeServices:
    """The origin (and decision service) of one node for one run; a Ray actor pinned there."""

    def __init__(self, config: Any, scratch: str) -> None:
        from streambed.emulation.sessions import run_servers

        self.stack = contextlib.ExitStack()
        out = Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        self.stack.callback(shutil.rmtree, out.parent, ignore_errors=True)
        self.urls = self.stack.enter_context(run_servers(dataclasses.replace(config, out=out)))

    def get_urls(self) -> tuple[str, str]:
        return self.urls

    def close(self) -> None:
        self.stack.close()


def run_session(config: Any, kind: str, run_id: str, job: Any) -> dict[str, Any]:
    """One session on this node (a Ray task): its failure (None when done), its node and its
    files, by path relative to the session's directory."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from streambed.emulation.link import outside_url
    from streambed.emulation.sessions import SessionRunner, mpd_url

    # ray.cancel interrupts a task with SIGINT; a node started in the background (``nohup ray
    # start ... &``) hands its workers SIGINT ignored, and a cancelled session would then never
    # tear its link down.
    with contextlib.suppress(ValueError):  # not the worker's main thread
        signal.signal(signal.SIGINT, signal.default_int_handler)
    node = ray.get_runtime_context().get_node_id()
    scratch = Path(tempfile.gettempdir()) / f"streambed-{run_id}-{node[:8]}"  # nodes may share /tmp
    services = (
        ray.remote(NodeServices)
        .options(
            name=f"streambed-{run_id}-{node}",
            get_if_exists=True,
            lifetime="detached",  # not owned by this task's worker: the driver ends it
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        )
        .remote(config, str(scratch / "services"))
    )
    origin, abr = ray.get(services.get_urls.remote())  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="session-", dir=_mkdir(scratch)) as tmp:
        local = dataclasses.replace(config, out=Path(tmp), progress=False)
        runner = SessionRunner(
            local, kind, outside_url(mpd_url(origin), kind), outside_url(abr, kind), run_id
        )
        try:
            failure = runner.run(job)
        except KeyboardInterrupt:  # ray.cancel: the link is torn down on the way out
            runner.stop()
            failure = {"interrupted": True}
        log_dir = job.log_dir(Path(tmp))
        files = {
            str(p.relative_to(log_dir)): p.read_bytes()
            for p in sorted(log_dir.rglob("*"))
            if p.is_file()
        }
    return {"failure": failure, "node": node, "files": files}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_central_urls(config: Any, kind: str) -> None:
    """``--origin``/``--abr`` with ``--cluster`` name one server for every node: reachable only
    through Mahimahi's NAT, and never as loopback (each node's 127.0.0.1 is itself)."""
    from urllib.parse import urlsplit

    from streambed.emulation.link import is_loopback

    for flag, url in (("--origin", config.origin_url), ("--abr", config.abr_url)):
        if url is None:
            continue
        if is_loopback(urlsplit(url).hostname or ""):
            raise ConfigError(
                f"{flag} {url}: with --cluster every node's loopback is itself: give an address "
                f"all nodes reach, or leave {flag} out (one per node)"
            )
        if kind != "mahimahi":
            raise ConfigError(
                f"{flag} {url}: with --cluster a central server is reached through Mahimahi's "
                f"NAT only (the {kind} link reaches its own node): use --link mahimahi, or leave "
                f"{flag} out (one per node)"
            )


def run_on_cluster(
    config: Any,
    kind: str,
    run_id: str,
    pending: list[Any],
    on_result: Any,
    bar: Any,
) -> Counter[str]:
    """Run ``pending`` sessions as Ray tasks; ``on_result(job, failure)`` for each as it
    finishes, after its files are in ``config.out``. Returns the sessions per node."""
    check_central_urls(config, kind)
    ray = connect(config.cluster)
    task = ray.remote(run_session).options(
        num_cpus=0, resources={SLOT: 1}, max_retries=NODE_RETRIES, retry_exceptions=False
    )
    slots = int(ray.cluster_resources().get(SLOT, 0))
    log.info("cluster %s: %d nodes, %d %s in all", config.cluster, len(_alive(ray)), slots, SLOT)
    shipped = dataclasses.replace(config, progress=False)
    refs = {task.remote(shipped, kind, run_id, job): job for job in pending}
    per_node: Counter[str] = Counter()
    try:
        remaining = list(refs)
        while remaining:
            finished, remaining = ray.wait(remaining, num_returns=1, timeout=0.5)
            for ref in finished:
                job = refs[ref]
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the task failed for good (its node died too often)
                    on_result(job, {"attempts": 1, "reasons": [f"{type(exc).__name__}: {exc}"]})
                    continue
                log_dir = job.log_dir(config.out)
                log_dir.mkdir(parents=True, exist_ok=True)
                for name, data in outcome["files"].items():
                    target = log_dir / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                node = outcome["node"][:8]
                per_node[node] += 1
                log.info("session %s/%s ran on node %s", job.algorithm, job.label, node)
                on_result(job, outcome["failure"])
            bar.set_postfix(
                running=min(len(remaining), slots),
                nodes=" ".join(f"{n}:{c}" for n, c in sorted(per_node.items())),
                refresh=False,
            )
            bar.refresh()
    except BaseException:
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        raise
    finally:
        for name in _actors(ray, run_id):  # stop each node's servers, then the actor
            with contextlib.suppress(Exception):
                actor = ray.get_actor(name)
                ray.get(actor.close.remote(), timeout=30)
                ray.kill(actor)
    return per_node


def _alive(ray: Any) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _actors(ray: Any, run_id: str) -> list[str]:
    with contextlib.suppress(Exception):
        from ray.util import list_named_actors

        return [n for n in list_named_actors() if n.startswith(f"streambed-{run_id}-")]
    return []
