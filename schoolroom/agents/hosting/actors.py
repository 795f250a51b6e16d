"""An agent on a Ray cluster: its replicas (each a Ray actor), restarted when they die mid-call, placed together
when their config groups them, and given the adapters other nodes made as bytes through Ray's object store."""

from __future__ import annotations

import os
import time
from typing import Any

from schoolroom import plugins as pluginlib
from schoolroom.agents.hosting.worker import FORWARDED_PREFIXES, AgentTimeout, Inline, Worker, is_effect, start_ray
from schoolroom.config import AgentConfig, RuntimeConfig
from schoolroom.errors import Explained, one_line
from schoolroom.messages import Note, TrainResult
from schoolroom.nested import leaves


class ActorLost(Explained):
    """An agent's actors died more often than ``runtime.max_restarts`` allows."""


class NotPlaced(Explained):
    """A placement group found no node with all it asks for."""


class Actor:
    """The agent as a Ray actor holding the CPUs, GPUs and custom resources its config asks for; Ray restarts it
    up to ``max_restarts`` times when it dies (a killed process, out of memory, a lost node)."""

    def __init__(self, name: str, config: AgentConfig, workdir: str = ".", plugins: tuple = (), max_restarts: int = 0,
                 placement: Any = None):
        import ray

        r = config.resources
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES) and "KEY" not in k}
        secrets = {config.api_key_env: os.environ[config.api_key_env]} if config.api_key_env in os.environ else {}
        opts: dict[str, Any] = dict(num_cpus=r.num_cpus, num_gpus=r.num_gpus, resources=dict(r.custom) or None,
                                    name=None, max_concurrency=1, max_restarts=max_restarts, max_task_retries=0,
                                    runtime_env={"env_vars": env} if env else None)
        if r.memory_mb:
            opts["memory"] = r.memory_mb * 2**20
        if placement is not None:
            opts["scheduling_strategy"] = placement
        self.name = name
        self.actor = ray.remote(Worker).options(**opts).remote(name, config, secrets, workdir, plugins)
        self._node: str | None = None
        self.known_life: str | None = None  # the actor's life token as last seen: a new one means Ray restarted it

    def life(self, timeout: float | None) -> str:
        """The actor's life token, once it answers (Ray refuses calls while it restarts it)."""
        import ray
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + (timeout or 3600.0)
        while True:
            try:
                return ray.get(self.actor.life.remote(), timeout=timeout)
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def submit(self, method: str, *args, adapters: dict | None = None, **kwargs):
        return self.actor.call.remote(method, args, kwargs, adapters)

    def result(self, fut, timeout: float | None = None):
        import ray
        from ray.exceptions import GetTimeoutError, RayTaskError  # a RayActorError (a lost actor) passes through

        try:
            return ray.get(fut, timeout=timeout)
        except GetTimeoutError:
            raise AgentTimeout(f"agent {self.name} did not answer within {timeout:.0f}s "
                               "(runtime.call_timeout_s; is the cluster short of the resources it asks for?)") from None
        except RayTaskError as e:
            raise e.as_instanceof_cause() from None

    def node_id(self) -> str:
        import ray

        if self._node is None:
            self._node = ray.get(self.actor.node_id.remote(), timeout=120)
        return self._node

    def kill(self) -> None:
        import ray

        ray.kill(self.actor)


class Sent:
    """A call sent to one replica: which one, Ray's reference to the answer, and what to send again if it dies."""

    def __init__(self, replica: int, ref, method: str, args: tuple, kwargs: dict, effect: tuple | None):
        self.replica, self.ref, self.method, self.args, self.kwargs, self.effect = \
            replica, ref, method, args, kwargs, effect
        self.others: list[Sent] = []  # an effect call's sends to the other replicas


class Replicas:
    """An agent as ``replicas`` Ray actors, each with the resources its config gives one. A call goes to the next
    replica in turn (the call path cuts batches into pieces and gathers them in order); an effect call (loading
    an adapter) goes to every replica. A replica that died mid-call is restarted by Ray, given the effect call it
    had, and asked again: at most ``max_restarts`` times in all for the agent, each said in a Note."""

    def __init__(self, name: str, config: AgentConfig, rt: RuntimeConfig, workdir: str, plugins: tuple,
                 adapters: Adapters, placement: list | None = None):
        self.name, self.role, self.max_restarts, self.adapters = name, config.role, rt.max_restarts, adapters
        n = max(1, config.replicas)
        self.actors = [Actor(name, config, workdir, plugins, rt.max_restarts, placement[i] if placement else None)
                      for i in range(n)]
        self.restarts, self._turn = 0, 0
        self._effect: tuple | None = None  # (method, args, kwargs) of the last effect call
        self._events: list[Note] = []
        adapters.agents[name] = self

    def submit(self, method: str, *args, **kwargs) -> Sent:
        if is_effect(self.role, method):
            self._effect = (method, args, kwargs)
            sent = [self._send(i, method, args, kwargs) for i in range(len(self.actors))]
            sent[0].others = sent[1:]
            return sent[0]
        i, self._turn = self._turn, (self._turn + 1) % len(self.actors)
        return self._send(i, method, args, kwargs)

    def _send(self, i: int, method: str, args: tuple, kwargs: dict) -> Sent:
        actor = self.actors[i]
        ref = actor.submit(method, *args, adapters=self.adapters.for_node((args, kwargs), actor), **kwargs)
        return Sent(i, ref, method, args, kwargs, self._effect)

    def result(self, sent: Sent, timeout: float | None = None) -> tuple[Any, list]:
        from ray.exceptions import RayActorError

        while True:
            try:
                result, side = self.actors[sent.replica].result(sent.ref, timeout)
                for other in sent.others:
                    self.result(other, timeout)
                break
            except RayActorError as e:
                sent = self._again(sent, e, timeout)
        self.adapters.made(result, self.actors[sent.replica])
        events, self._events = self._events, []
        return result, events + side

    def _again(self, sent: Sent, e: Exception, timeout: float | None) -> Sent:
        """A call was lost with its replica. Once the replica answers again, a new life (Ray restarted it) is
        counted and said once for all the calls lost with it, and given the effect call (the adapter) it had; then
        the call is sent again."""
        from ray.exceptions import ActorDiedError

        i, actor = sent.replica, self.actors[sent.replica]
        what = f"agent {self.name}" + (f" (replica {i + 1} of {len(self.actors)})" if len(self.actors) > 1 else "")
        try:
            life = actor.life(timeout)
        except ActorDiedError as dead:
            raise ActorLost(f"{what} died in {self.name}.{sent.method} again after {self.restarts} restarts, and "
                            f"Ray did not restart it (runtime.max_restarts = {self.max_restarts}): "
                            f"{one_line(dead)}") from e
        if life != actor.known_life:
            actor.known_life = life
            self.restarts += 1
            if self.restarts > self.max_restarts:
                raise ActorLost(f"{what} died in {self.name}.{sent.method} again after {self.restarts - 1} "
                                f"restarts (runtime.max_restarts = {self.max_restarts}): {one_line(e)}") from e
            self._events.append(Note(kind="actor_restarted", sender="runtime", data={
                "agent": self.name, "replica": i, "method": sent.method, "restarts": self.restarts,
                "max_restarts": self.max_restarts, "cause": one_line(e)},
                text=f"{what} died in {self.name}.{sent.method} ({one_line(e)}); Ray restarted it and the call was "
                     f"asked again ({self.restarts} of at most {self.max_restarts} restarts)"))
            actor._node = None  # a lost node: Ray may have restarted it elsewhere
            if sent.effect is not None and sent.effect[0] != sent.method:  # the adapter it had loaded, again
                m, a, kw = sent.effect
                actor.submit(m, *a, adapters=self.adapters.for_node((a, kw), actor), **kw)
        again = Sent(i, actor.submit(sent.method, *sent.args, **sent.kwargs,
                                    adapters=self.adapters.for_node((sent.args, sent.kwargs), actor)),
                     sent.method, sent.args, sent.kwargs, sent.effect)
        again.others = sent.others
        return again

    def node_id(self) -> str:
        return self.actors[0].node_id()

    def nodes(self) -> list[str]:
        """The node each replica runs on (asked once it is ready; its life token with it)."""
        for h in self.actors:
            h.known_life = h.known_life or h.life(120)
        return [h.node_id() for h in self.actors]

    def kill(self) -> None:
        for h in self.actors:
            h.kill()


class Adapters:
    """Where each adapter was made, so an agent on another node is sent its bytes instead of a path it cannot read
    (``runtime.shared_fs = true``: every node reads every path; adapters go as paths)."""

    def __init__(self, shared_fs: bool = False):
        self.shared_fs = shared_fs
        self.agents: dict[str, Replicas] = {}
        self._where: dict[str, Actor] = {}  # adapter path -> the actor that wrote it
        self._bytes: dict[str, Any] = {}  # adapter path -> its folder's bytes in the object store (owned here)

    def made(self, result: Any, actor: Actor) -> None:
        for tr in _train_results(result):
            if tr.path:
                self._where[tr.path] = actor

    def for_node(self, x: Any, actor: Actor) -> dict | None:
        if self.shared_fs:
            return None
        out = {}
        for tr in _train_results(x):
            src = self._where.get(tr.path)
            if src is None and tr.sender in self.agents:  # made before a resume: its agent is asked for it
                src = self._where[tr.path] = self.agents[tr.sender].actors[0]
            if src is None or not tr.path or src is actor or src.node_id() == actor.node_id():
                continue
            if tr.path not in self._bytes:
                self._bytes[tr.path] = src.actor.pack.remote(tr.path)
            out[tr.path] = [self._bytes[tr.path], src.node_id()]
        return out or None


def _train_results(x: Any) -> list[TrainResult]:
    return [v for v in leaves(x) if isinstance(v, TrainResult)]


def place(agents: dict[str, AgentConfig], rt: RuntimeConfig) -> tuple[dict[str, list], list]:
    """One Ray placement group per ``resources.group`` the agents name, its bundles (one per replica of each of its
    agents) packed on one node: {agent: its replicas' scheduling strategies}, and the groups (to remove at the end)."""
    groups: dict[str, list[str]] = {}
    for name, a in agents.items():
        if a.resources.group:
            groups.setdefault(a.resources.group, []).append(name)
    if not groups or rt.address == "inline":
        return {}, []
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    start_ray(rt)
    where: dict[str, list] = {}
    made = []
    for group, names in groups.items():
        bundles, owners = [], []
        for n in names:
            r = agents[n].resources
            bundle = {k: v for k, v in {"CPU": r.num_cpus, "GPU": r.num_gpus, **r.custom}.items() if v}
            for _ in range(max(1, agents[n].replicas)):
                bundles.append(bundle or {"CPU": 0.001})  # Ray refuses an empty bundle
                owners.append(n)
        pg = placement_group(bundles, strategy="STRICT_PACK", name=f"schoolroom-{group}")
        made.append(pg)
        wait = min(rt.call_timeout_s, 300.0)
        ready, _ = ray.wait([pg.ready()], timeout=wait)
        if not ready:
            need = {k: sum(b.get(k, 0) for b in bundles) for k in dict.fromkeys(k for b in bundles for k in b)}
            for g in made:
                ray.util.remove_placement_group(g)
            raise NotPlaced(f"placement group {group!r} (agents {', '.join(names)}: "
                            f"{', '.join(f'{v:g} {k}' for k, v in need.items())}) found no node with all of it within "
                            f"{wait:.0f}s: a group is packed on one node")
        for i, n in enumerate(owners):
            where.setdefault(n, []).append(PlacementGroupSchedulingStrategy(placement_group=pg,
                                                                            placement_group_bundle_index=i))
    return where, made


def release(groups: list) -> None:
    """Remove the placement groups :func:`place` made."""
    if groups:
        import ray

        for g in groups:
            try:
                ray.util.remove_placement_group(g)
            except Exception:  # Ray already shut down
                pass


def spawn(name: str, config: AgentConfig, rt: RuntimeConfig, workdir: str = ".", plugins: tuple[str, ...] = (),
          adapters: Adapters | None = None, placement: list | None = None) -> Inline | Replicas:
    """Start agent ``name`` where the runtime says; ``workdir`` (the run directory) is where it may write files;
    ``plugins`` (a protocol's own file or module) are imported where it runs before it is made."""
    workdir = os.path.abspath(workdir)
    if rt.address == "inline":
        return Inline(name, config, workdir, plugins)

    start_ray(rt)
    pluginlib.load_all(plugins)  # here too: the driver needs the roles' methods (which are effect calls)
    return Replicas(name, config, rt, workdir, pluginlib.bundle(plugins),  # the file's text: nodes need not share disks
                    adapters or Adapters(rt.shared_fs), placement)
