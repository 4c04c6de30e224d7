"""The one module that talks to the Docker engine. Everything else gets an Engine.

Calls that remove or revert tolerate "not found", so teardown can run twice.
Every engine error becomes a LabError with a message that says what to do.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from labctl import subnets
from labctl.errors import EngineRefused, ExitCode, LabError

DEFAULT = "default"  # the engine's name when none is named: the docker CLI's "default" context

_TRANSIENT = (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout)
# Engine calls retried when the engine hiccups (it restarts, or is briefly busy).
engine_retry = retry(
    retry=retry_if_exception_type(_TRANSIENT),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.2, max=2),
    reraise=True,
)


def unreachable(e: Exception, name: str = DEFAULT) -> LabError:
    if name == DEFAULT:
        return LabError(ExitCode.ENGINE_UNREACHABLE, f"the Docker engine is not reachable ({short(e)})",
                        "start it (systemctl start docker, or dockerd &) and check DOCKER_HOST; "
                        "`labctl doctor` tells more")
    return LabError(ExitCode.ENGINE_UNREACHABLE, f"the Docker engine {name} is not reachable ({short(e)})",
                    f"start it, or leave out --engine {name}")


@dataclass(frozen=True)
class Connection:
    """How to reach one engine. base_url None: the environment's engine
    (DOCKER_HOST, else the default socket), as the docker CLI's "default"
    context. tls_dir holds ca.pem, cert.pem and key.pem (the docker CLI's
    layout, for DOCKER_CERT_PATH and for a context's TLS material)."""

    name: str = "default"
    base_url: str | None = None
    tls_dir: str | None = None
    tls_verify: bool = False

    def client(self, timeout: float, version: str | None = None) -> docker.DockerClient:
        if self.base_url is None:
            return docker.from_env(timeout=timeout, **({"version": version} if version else {}))
        tls: Any = False
        if self.tls_dir:
            d = Path(self.tls_dir)
            ca = d / "ca.pem"
            tls = docker.tls.TLSConfig(client_cert=(str(d / "cert.pem"), str(d / "key.pem")),
                                       ca_cert=str(ca) if ca.exists() else None, verify=self.tls_verify)
        return docker.DockerClient(base_url=self.base_url, tls=tls, timeout=int(timeout), version=version or "auto",
                                   use_ssh_client=self.base_url.startswith("ssh://"))


def short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


# No engine-side probe in any container labctl creates, whatever the image
# says: a probe exec'd just as `docker pause` freezes the cgroup freezes with
# it, the engine waits on it holding the container's lock, and the unpause
# never runs (seen with 30 labs at once). The lab's monitor is the health signal.
NO_HEALTHCHECK = {"Test": ["NONE"]}
REMOVE_WAIT_S = 30.0  # how long a removal begun elsewhere may take
SUBNET_TRIES = 20  # subnets tried for one network once the default pools are used up


@dataclass
class ContainerSpec:
    """One container of a lab. compose.py fills it from compose.yaml (service,
    build context, command, hardening), then per lab (its names, labels, image)."""

    service: str
    image: str  # compose's image name, until a lab sets the ref it runs
    command: list[str]
    build_context: Path  # where compose.yaml builds the image from
    mount: str = "/lab"
    user: str | None = None
    read_only: bool = True
    tmpfs: dict[str, str] = field(default_factory=dict)
    cap_drop: list[str] = field(default_factory=lambda: ["ALL"])
    security_opt: list[str] = field(default_factory=lambda: ["no-new-privileges:true"])
    mem_limit: str | None = None
    nano_cpus: int | None = None
    pids_limit: int | None = None
    restart: dict[str, Any] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    # Per lab:
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    network: str = ""
    aliases: list[str] = field(default_factory=list)
    volume: str = ""


@dataclass
class ContainerState:
    id: str
    name: str
    status: str  # created | running | paused | restarting | exited | dead
    exit_code: int | None
    restart_count: int
    pid: int
    labels: dict[str, str]
    networks: list[str]
    started_at: str = ""
    finished_at: str = ""
    oom_killed: bool = False
    user: str = ""  # the user it runs as, as configured ("10001:10001"; "" for the image's)


class Engine:
    # What Engine.open() reaches when given no connection: the CLI sets it
    # to the first --engine, so single-engine commands use that one.
    default_connection = Connection()

    def __init__(self, client: docker.DockerClient, conn: Connection | None = None):
        self.client = client
        self.api = client.api
        self.conn = conn or Connection()
        self.name = self.conn.name
        self._lock = threading.Lock()

    @classmethod
    def open(cls, timeout: float = 60, conn: Connection | None = None) -> Engine:
        conn = conn or cls.default_connection
        try:
            client = conn.client(timeout)
            client.ping()
        except (docker.errors.DockerException, *_TRANSIENT, OSError) as e:
            raise unreachable(e, conn.name) from None
        return cls(client, conn)

    def clone(self) -> Engine:
        """A second connection, for a thread that blocks on a stream."""
        return Engine(self.conn.client(self.api.timeout, self.api.api_version), self.conn)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    # ------------------------------------------------------------ info

    def version(self) -> dict:
        return self._call(self.client.version)

    def info(self) -> dict:
        return self._call(self.client.info)

    # ------------------------------------------------------------ images

    def image_exists(self, ref: str) -> bool:
        try:
            self._call(self.client.images.get, ref)
            return True
        except docker.errors.ImageNotFound:
            return False

    def image_labels(self, ref: str) -> dict[str, str]:
        try:
            img = self._call(self.client.images.get, ref)
        except docker.errors.ImageNotFound:
            return {}
        return dict(img.labels or {})

    def image_id(self, ref: str) -> str | None:
        try:
            return self._call(self.client.images.get, ref).id
        except docker.errors.ImageNotFound:
            return None

    def save(self, ref: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The image as a `docker save` tar stream (its tag included)."""
        try:
            return iter(self._call(self.api.get_image, ref, chunk_size=chunk_size))
        except docker.errors.ImageNotFound:
            raise LabError(ExitCode.IMAGE_MISSING, f"engine {self.name} has no image {ref} to send",
                           "run `labctl build` there") from None

    def save_many(self, refs: list[str], chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Several images as one `docker save` tar stream (each shared layer
        once, every ref's tag included)."""
        try:
            res = self._call(self.api._get, self.api._url("/images/get"), params={"names": refs}, stream=True)
            self.api._raise_for_status(res)
        except docker.errors.ImageNotFound:
            raise LabError(ExitCode.IMAGE_MISSING, f"engine {self.name} lacks one of {', '.join(refs)}",
                           "run `labctl build`") from None
        except docker.errors.APIError as e:
            raise self._engine_error(e, f"saving {', '.join(refs)}") from None
        return iter(self.api._stream_raw_result(res, chunk_size, False))

    def load(self, data: Iterator[bytes]) -> list[str]:
        """Loads a `docker save` stream (sent as it comes, never held whole);
        returns what the engine said it loaded."""
        said: list[str] = []
        try:
            for msg in self.api.load_image(data):
                if "error" in msg:
                    raise LabError(ExitCode.ENGINE_ERROR, f"engine {self.name} refused the image: {msg['error']}",
                                   "`labctl doctor` checks that engine")
                if msg.get("stream", "").strip():
                    said.append(msg["stream"].strip())
        except docker.errors.APIError as e:
            raise self._engine_error(e, f"loading an image into {self.name}") from None
        return said

    def running_count(self, filters: dict) -> int:
        """How many running containers match (listed, not inspected)."""
        return len(self._call(self.api.containers, filters=filters))

    def engine_id(self) -> str:
        """Tells engines apart: the engine's ID alone does not (two dockerds
        on one host share /etc/docker/key.json, and so their ID)."""
        info = self.info()
        return "|".join(str(info.get(k) or "") for k in ("ID", "Name", "DockerRootDir")) or self.name

    def tag(self, ref: str, repo: str, tag: str) -> None:
        self._call(self.client.images.get, ref).tag(repo, tag)

    def try_pull(self, ref: str) -> bool:
        """True if the image could be pulled; False when no registry answers."""
        repo, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
        try:
            self.client.images.pull(repo, tag=tag)
            return True
        except (docker.errors.APIError, docker.errors.ImageNotFound):
            return False

    def build(self, path: str, tag: str, buildargs: dict[str, str], labels: dict[str, str],
              on_line: Callable[[str], None]) -> str:
        """Builds an image; streams the builder's output lines; returns the image id."""
        last_error = None
        try:
            for chunk in self.api.build(path=path, tag=tag, buildargs=buildargs, labels=labels, rm=True,
                                        forcerm=True, decode=True, pull=False):
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        if line.strip():
                            on_line(line)
                if "error" in chunk:
                    last_error = chunk["error"].strip()
        except docker.errors.APIError as e:
            last_error = short(e)
        if last_error:
            raise LabError(ExitCode.BUILD_FAILED, f"building {tag} failed: {last_error}",
                           "fix the Dockerfile or sources under " + path)
        return self._built_id(tag)

    def import_rootfs(self, tar_path: str, repo: str, tag: str, changes: list[str]) -> str:
        self._call(self.api.import_image_from_file, tar_path, repository=repo, tag=tag, changes=changes)
        return self._built_id(f"{repo}:{tag}")

    def _built_id(self, ref: str) -> str:
        found = self.image_id(ref)
        if found is None:
            raise LabError(ExitCode.BUILD_FAILED, f"the engine reports no image {ref} right after building it",
                           "`docker image ls` shows what it has; try `labctl build --force`")
        return found

    # ------------------------------------------------------------ resources

    def create_network(self, name: str, labels: dict[str, str]) -> str:
        """An internal bridge network: a subnet from the engine's default
        pools, or, once those are used up (about 30 networks) or the engine
        trips over its own concurrent allocations, a /24 that labctl picks
        clear of every subnet in use (labctl.subnets)."""
        try:
            return self._create_network(name, labels, None)
        except docker.errors.APIError as e:
            if not subnets.own_subnet_needed(str(e.explanation or e)):
                raise self._engine_error(e, f"creating network {name}") from None
            last: docker.errors.APIError = e
        for _ in range(SUBNET_TRIES):
            subnet = next(subnets.candidates(self._subnets_in_use()), None)
            if subnet is None:
                break
            try:
                return self._create_network(name, labels, str(subnet))
            except docker.errors.APIError as e:
                if not subnets.own_subnet_needed(str(e.explanation or e)):
                    # Not the subnet (a name taken, an engine error): another subnet would not help.
                    raise self._engine_error(e, f"creating network {name}") from None
                last = e  # taken meanwhile by another network: look again
        raise self._engine_error(last, f"creating network {name}") from None

    def _subnets_in_use(self) -> list[subnets.IPv4Net]:
        used = subnets.parse(c.get("Subnet", "") for n in self._call(self.api.networks)
                             for c in ((n.get("IPAM") or {}).get("Config") or []))
        if self.api.base_url.startswith("http+docker://localhost"):  # this machine's engine
            used += subnets.host_routes()
        return used

    def _create_network(self, name: str, labels: dict[str, str], subnet: str | None) -> str:
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)]) if subnet else None
        try:
            net = self._call(self.client.networks.create, name, driver="bridge", internal=True, labels=labels,
                             check_duplicate=True, ipam=ipam)
        except docker.errors.APIError as e:
            if e.status_code == 409:
                raise LabError(ExitCode.LAB_EXISTS, f"network {name} already exists",
                               "pick another --lab name, or remove it with `labctl down --lab ...`") from None
            raise
        return str(net.id)

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self._call(self.client.volumes.create, name=name, labels=labels)

    def create_probe(self, *, image: str, name: str, labels: dict[str, str], command: list[str], network: str,
                     user: str, mem_limit: str, nano_cpus: int, pids_limit: int) -> str:
        """A short-lived container that only proves the engine can run one on
        `network` ("bridge" is the engine's default network; any other name a
        user network): hardened like the lab's (read-only root, every
        capability dropped, no-new-privileges, memory with no swap on top, CPU
        and pid limits, no core files, no health probe), no volume, no restart.
        Returns its id (created, not started)."""
        host_config = self.api.create_host_config(
            network_mode=network, read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            mem_limit=mem_limit, memswap_limit=mem_limit, nano_cpus=nano_cpus, pids_limit=pids_limit,
            ulimits=[docker.types.Ulimit(name="core", soft=0, hard=0)])
        return self._create_bare(image, name, labels, command, user, host_config)

    def _create_bare(self, image: str, name: str, labels: dict[str, str], command: list[str], user: str,
                     host_config: dict) -> str:
        """A container with no network config of its own and no health probe (a probe or a helper)."""
        try:
            c = self._call(self.api.create_container, image, command=command, name=name, labels=labels, user=user,
                           healthcheck=NO_HEALTHCHECK, host_config=host_config)
        except docker.errors.ImageNotFound:
            raise LabError(ExitCode.IMAGE_MISSING, f"image {image} is missing", "run `labctl build`") from None
        except docker.errors.APIError as e:
            raise self._engine_error(e, f"creating {name}") from None
        return c["Id"]

    def create_helper(self, *, image: str, name: str, labels: dict[str, str], command: list[str], user: str,
                      joins: str, namespace: str, cap_add: tuple[str, ...] = ()) -> str:
        """A fault helper: a container that joins another's network or pid
        namespace (`namespace` "network" or "pid", of the container `joins`)
        to change it from inside, holding at most the capabilities named
        (NET_ADMIN for iptables), every other one dropped; read-only root,
        no-new-privileges, small memory and pid limits, no volume, no
        restart, no health probe. Returns its id (created, not started)."""
        shared = {"network_mode": f"container:{joins}"} if namespace == "network" else {
            "pid_mode": f"container:{joins}", "network_mode": "none"}
        host_config = self.api.create_host_config(
            read_only=True, cap_drop=["ALL"], cap_add=list(cap_add) or None,
            security_opt=["no-new-privileges:true"], mem_limit="32m", memswap_limit="32m", pids_limit=16,
            ulimits=[docker.types.Ulimit(name="core", soft=0, hard=0)], **shared)
        return self._create_bare(image, name, labels, command, user, host_config)

    def create_container(self, spec: ContainerSpec) -> str:
        host_config = self.api.create_host_config(
            binds={spec.volume: {"bind": spec.mount, "mode": "rw"}},
            read_only=spec.read_only,
            tmpfs=spec.tmpfs or None,
            cap_drop=spec.cap_drop,
            security_opt=spec.security_opt,
            mem_limit=spec.mem_limit,
            nano_cpus=spec.nano_cpus,
            pids_limit=spec.pids_limit,
            restart_policy=spec.restart,
            network_mode=spec.network,
        )
        # Joining another container's namespace ("container:NAME") takes no endpoint of its own.
        net_config = None if spec.network.startswith("container:") else self.api.create_networking_config(
            {spec.network: self.api.create_endpoint_config(aliases=spec.aliases)})
        try:
            c = self._call(self.api.create_container, spec.image, command=spec.command, name=spec.name,
                           labels=spec.labels, user=spec.user, environment=spec.environment,
                           entrypoint=spec.entrypoint, healthcheck=NO_HEALTHCHECK,
                           host_config=host_config, networking_config=net_config)
        except docker.errors.ImageNotFound:
            raise LabError(ExitCode.IMAGE_MISSING, f"image {spec.image} is missing", "run `labctl build`") from None
        except docker.errors.APIError as e:
            if e.status_code == 409:
                raise LabError(ExitCode.LAB_EXISTS, f"container {spec.name} already exists",
                               "pick another --lab name, or `labctl down --lab ...`") from None
            raise self._engine_error(e, f"creating {spec.name}") from None
        return c["Id"]

    def start(self, name: str) -> None:
        self._refusable(f"starting {name}", self.api.start, name)

    def containers(self, filters: dict) -> list[ContainerState]:
        """Matching containers, inspected; one removed between the listing and
        its inspection (a teardown under way) is simply left out."""
        out = []
        for summary in self._call(self.api.containers, all=True, filters=filters):
            st = self.inspect(summary["Id"])
            if st is not None:
                out.append(st)
        return out

    def inspect(self, name: str) -> ContainerState | None:
        try:
            return self._state(self._call(self.api.inspect_container, name))
        except docker.errors.NotFound:
            return None

    @staticmethod
    def _state(attrs: dict) -> ContainerState:
        st = attrs.get("State", {})
        return ContainerState(
            id=attrs["Id"],
            name=attrs["Name"].lstrip("/"),
            status=st.get("Status", "unknown"),
            exit_code=st.get("ExitCode"),
            restart_count=attrs.get("RestartCount", 0),
            pid=st.get("Pid", 0),
            labels=attrs.get("Config", {}).get("Labels") or {},
            networks=list((attrs.get("NetworkSettings", {}).get("Networks") or {}).keys()),
            started_at=st.get("StartedAt", ""),
            finished_at=st.get("FinishedAt", ""),
            oom_killed=st.get("OOMKilled", False),
            user=(attrs.get("Config") or {}).get("User") or "",
        )

    def address(self, name: str, network: str) -> str | None:
        """The container's IPv4 address on `network`, as the engine assigned it; None if it has none."""
        try:
            attrs = self._call(self.api.inspect_container, name)
        except docker.errors.NotFound:
            return None
        net = ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).get(network) or {}
        return net.get("IPAddress") or None

    def networks(self, filters: dict) -> list[tuple[str, str]]:
        return [(n.id, n.name) for n in self._call(self.client.networks.list, filters=filters)]

    def volumes(self, filters: dict) -> list[str]:
        return [v.name for v in self._call(self.client.volumes.list, filters=filters)]

    def remove_container(self, name_or_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            c = self._call(self.client.containers.get, name_or_id)
            if c.status == "paused":
                with contextlib.suppress(docker.errors.APIError):
                    c.unpause()
            # Even a stopped container can be restarting by policy: force.
            try:
                c.remove(force=True, v=False)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                # Another thread (a cleanup after Ctrl-C) is removing it: wait for that instead.
                if e.status_code != 409 or "already in progress" not in str(e):
                    raise
                wait_for(lambda: self.inspect(name_or_id) is None, REMOVE_WAIT_S, 0.1,
                         f"the removal of {name_or_id} already in progress", seen=lambda: "still there")

    def remove_network(self, name_or_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._call(self.client.networks.get, name_or_id).remove()

    def remove_volume(self, name: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._call(self.client.volumes.get, name).remove(force=True)

    # ------------------------------------------------------------ faults
    # An engine that answers "no" (the container is not running, is gone...)
    # becomes a LabError that says so; one that does not answer stays an
    # engine error for the caller to report as lost.

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        self._refusable(f"killing {name}", self.api.kill, name, signal=signal)

    def stop(self, name: str, timeout: int = 10) -> None:
        self._refusable(f"stopping {name}", self.api.stop, name, timeout=timeout)

    def pause(self, name: str) -> None:
        self._refusable(f"pausing {name}", self.api.pause, name)

    def unpause(self, name: str) -> None:
        try:
            self._call(self.api.unpause, name)
        except docker.errors.APIError as e:
            # Gone, or not paused: already reverted. Docker 20.10 says "is not
            # paused" with a 500, which is not worth the retries a 500 gets.
            if e.status_code not in (404, 409) and "is not paused" not in (e.explanation or ""):
                raise self._refused(f"unpausing {name}", e) from None

    def exec(self, name: str, cmd: list[str], user: str | None = None) -> tuple[int, str]:
        def run() -> Any:
            c = self.client.containers.get(name)
            return c.exec_run(cmd, user=user or "", demux=False)

        res = self._refusable(f"running {cmd[-1]!r} in {name}", run)
        return res.exit_code, (res.output or b"").decode("utf-8", "replace")

    def disconnect(self, network: str, container: str) -> None:
        self._refusable(f"disconnecting {container}",
                        lambda: self.client.networks.get(network).disconnect(container, force=True))

    def _refusable(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return self._call(fn, *args, **kwargs)
        except docker.errors.APIError as e:
            raise self._refused(doing, e) from None

    @staticmethod
    def _refused(doing: str, e: docker.errors.APIError) -> EngineRefused:
        # The status travels with the error: a 5xx is worth another try, a conflict is not.
        return EngineRefused(f"the engine refused {doing}: {e.explanation or short(e)}",
                             "`labctl status` shows the lab's containers", status=e.status_code)

    def reconnect(self, network: str, container: str, aliases: list[str]) -> None:
        try:
            self._call(self.client.networks.get, network).connect(container, aliases=aliases)
        except docker.errors.APIError as e:
            if "already exists" not in str(e) and e.status_code != 404:  # already healed, or gone
                raise self._refused(f"reconnecting {container}", e) from None

    # ------------------------------------------------------------ streams

    def logs(self, name: str, follow: bool, since: float | None = None) -> Iterator[bytes]:
        """Log lines with the engine's RFC 3339 timestamp prefix."""
        kw: dict[str, Any] = {"stream": True, "follow": follow, "timestamps": True}
        if since is not None:
            kw["since"] = since
        return self._call(self.api.logs, name, **kw)

    def logs_text(self, name: str, tail: int | str = "all", stderr: bool = True) -> str:
        try:
            return self._call(self.api.logs, name, timestamps=False, tail=tail,
                              stderr=stderr).decode("utf-8", "replace")
        except docker.errors.NotFound:
            return ""

    def events(self, filters: dict[str, Any], since: float | None = None) -> Any:
        """The engine's event stream (decoded); close() it to stop."""
        return self.client.events(decode=True, filters=filters, since=since)

    def get_archive(self, name: str, path: str) -> Iterator[bytes]:
        stream, _ = self._call(self.api.get_archive, name, path)
        return stream

    def wait(self, name: str, timeout: float) -> int | None:
        try:
            return self.api.wait(name, timeout=timeout)["StatusCode"]
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return None

    # ------------------------------------------------------------ helpers

    @engine_retry
    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    @staticmethod
    def _engine_error(e: Exception, doing: str) -> LabError:
        return LabError(ExitCode.ENGINE_ERROR, f"the engine refused {doing}: {short(e)}", "see `labctl doctor`")

    # ------------------------------------------------------------ grading sandboxes (labctl grade)
    # Students' programs run in containers with no network at all, whose only
    # writable place is a size-capped tmpfs volume; files go in while the
    # container runs (a tmpfs volume mounted at start hides what was copied
    # into a created-but-not-started container).

    def with_timeout(self, timeout: float) -> Engine:
        """A second connection whose reads wait up to `timeout` s: for a
        command that runs long and says nothing until it ends."""
        return Engine(self.conn.client(timeout, self.api.api_version), self.conn)

    def create_tmpfs_volume(self, name: str, labels: dict[str, str], size: str, uid: int, gid: int,
                            mode: str = "0700") -> None:
        """A volume that is a tmpfs of at most `size`, owned by uid:gid: it
        lives in memory, is capped, and vanishes with the volume."""
        opts = {"type": "tmpfs", "device": "tmpfs", "o": f"size={size},uid={uid},gid={gid},mode={mode}"}
        try:
            self._call(self.api.create_volume, name=name, driver="local", driver_opts=opts, labels=labels)
        except docker.errors.APIError as e:
            raise self._engine_error(e, f"creating volume {name}") from None

    def create_isolated(self, *, image: str, name: str, labels: dict[str, str], entrypoint: list[str],
                        command: list[str], user: str, volume: str | None, mount: str | None,
                        tmpfs: dict[str, str], mem_limit: str, nano_cpus: int, pids_limit: int,
                        shm_size: str = "8m", environment: dict[str, str] | None = None) -> str:
        """A container for untrusted code: network_mode none (it sees only
        lo), read-only root, every capability dropped, no-new-privileges,
        memory with no swap on top, CPU and pid limits, no core files, no
        health probe. Its writable places are `volume` at `mount` and the
        `tmpfs` mounts. Returns the container's id (created, not started)."""
        binds = {volume: {"bind": mount, "mode": "rw"}} if volume and mount else {}
        host_config = self.api.create_host_config(
            binds=binds, network_mode="none", read_only=True, tmpfs=tmpfs,
            cap_drop=["ALL"], security_opt=["no-new-privileges:true"], mem_limit=mem_limit,
            memswap_limit=mem_limit, nano_cpus=nano_cpus, pids_limit=pids_limit, shm_size=shm_size,
            ulimits=[docker.types.Ulimit(name="core", soft=0, hard=0)])
        try:
            c = self._call(self.api.create_container, image, command=command, name=name, labels=labels,
                           user=user, entrypoint=entrypoint, healthcheck=NO_HEALTHCHECK, host_config=host_config,
                           environment=environment)
        except docker.errors.ImageNotFound:
            raise LabError(ExitCode.IMAGE_MISSING, f"image {image} is missing", "run `labctl build`") from None
        except docker.errors.APIError as e:
            raise self._engine_error(e, f"creating {name}") from None
        return c["Id"]

    def put_archive(self, name: str, path: str, data: bytes) -> None:
        """Unpacks a tar archive (bytes) at path inside a container."""
        if not self._refusable(f"copying files into {name}", self.api.put_archive, name, path, data):
            raise EngineRefused(f"the engine refused copying files into {name}:{path}",
                                "`docker inspect` the container; is it still there?")

    def exec_capture(self, name: str, cmd: list[str], *, user: str, environment: dict[str, str] | None = None,
                     workdir: str | None = None,
                     on_stderr: Callable[[bytes], None] | None = None) -> tuple[int | None, bytes, bytes]:
        """Runs cmd in a running container; (exit code, stdout, stderr) once it
        ends. on_stderr, if given, sees stderr as it comes. Never retried: a
        command must not run twice. It blocks for as long as cmd runs, so a
        caller that needs a deadline runs it in a thread and removes the
        container when the deadline passes (which ends it)."""
        ex = self._refusable(f"starting {cmd[0]!r} in {name}", self.api.exec_create, name, cmd, user=user,
                             environment=environment, workdir=workdir)
        out, err = bytearray(), bytearray()
        try:
            for chunk_out, chunk_err in self.api.exec_start(ex["Id"], stream=True, demux=True):
                out += chunk_out or b""
                if chunk_err:
                    err += chunk_err
                    if on_stderr:
                        on_stderr(chunk_err)
        except docker.errors.APIError as e:
            raise EngineRefused(f"the engine refused running {cmd[0]!r} in {name}: {e.explanation or short(e)}",
                                "`docker inspect` the container; is it still there?", status=e.status_code) from None
        try:
            code = self._call(self.api.exec_inspect, ex["Id"]).get("ExitCode")
        except docker.errors.NotFound:
            code = None  # the container went away with the command
        return code, bytes(out), bytes(err)

def wait_for(pred: Callable[[], object], timeout: float, interval: float, what: str,
             seen: Callable[[], str] | None = None) -> object:
    """Polls pred() until truthy; on timeout raises with what it last saw
    (seen(), or pred's last value)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            saw = seen() if seen else repr(last)
            raise LabError(ExitCode.FAILED, f"timed out after {timeout:.0f} s waiting for {what}; last saw {saw}")
        time.sleep(interval)


def is_engine_gone(e: BaseException) -> bool:
    """The engine stopped answering (not: it answered no)."""
    if isinstance(e, docker.errors.APIError):
        return False
    return isinstance(e, (*_TRANSIENT, docker.errors.DockerException))
