"""A warm SuperExec: one long-lived process on a SuperNode's machine that runs the node's
ClientApp messages in-process, so Python, Flower, torch, the task and its data stay loaded
from one message to the next.

Flower 1.42 runs each message a SuperNode receives in a fresh ``flwr-clientapp`` process
(``subprocess`` isolation). On 2 cores that costs about 3 s to start Python and Flower and
5-10 s more to import torch and load the node's data, on every message of every round.
With ``flower-supernode --isolation process`` the SuperNode starts no executor and waits
for one to take its tasks through its Runtime API; this is such an executor. It does what
``flwr-clientapp`` does for each task (pull the message, context, run and FAB; run the
ClientApp; push the reply and the context), without leaving the process.

The ClientApp of the first FAB it runs stays loaded. A task of another FAB (another app, or
another version of this one, whose modules would clash with the ones already imported) runs
as Flower runs it, in a fresh ``flwr-clientapp`` process. A ClientApp that raises sends an
error reply, as in Flower; one that crashes the process takes the executor with it, and the
SuperNode's task heartbeat lets the server see that node drop out. Whatever a ClientApp
keeps in module globals lives on to its next message: fedcore's keeps nothing a message
depends on (node state travels in the Context and the node's state directory).

Run it beside each SuperNode::

    flower-supernode --isolation process --host 127.0.0.1 --port 9094 ...
    fedcore warm-exec --runtime-api-address 127.0.0.1:9094 --insecure
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from logging import ERROR, INFO
from pathlib import Path

from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.cli.install import install_from_fab
from flwr.clientapp.client_app import ClientApp, LoadClientAppError
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
    AcquireTaskRequest,  # pylint: disable=E0611
    PullAppMessagesRequest,
    PullTaskInputRequest,
)
from flwr.supercore import log
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

DEFAULT_POLL = 0.1  # seconds between looks for a task: a local HTTP call, cheap
# The SuperNode offers a task as soon as it has the message, before it has pulled the
# message's content from the SuperLink; Flower's pull then backs off 1 s, 2 s, ... per try.
# The content is on its way over loopback: look again soon.
PULL_BACKOFF, PULL_BACKOFF_CAP = 0.02, 0.5
_AUTH_METHODS = frozenset({"/flwr.proto.Runtime/AcquireTask"})


@dataclass
class WarmExecutor:
    """Takes a SuperNode's ClientApp tasks from its Runtime API and runs them in-process.

    Args:
        runtime_api_address: the SuperNode's Runtime API (``--host``:``--port``).
        insecure: plain HTTP to the Runtime API (on loopback); else TLS, trusting
            ``root_certificates`` (a PEM file; None: the system's).
        auth_secret: the SuperExec shared secret the SuperNode was given
            (``--superexec-auth-secret-file``), if any.
        poll: seconds between looks for a task.
        preload: modules to import before the first task (the ClientApp's heavy ones), so
            that the first round is as fast as the others.
    """

    runtime_api_address: str
    insecure: bool = False
    root_certificates: Path | None = None
    auth_secret: bytes | None = None
    poll: float = DEFAULT_POLL
    preload: tuple[str, ...] = ()
    ran: int = 0  # tasks run in this process
    forwarded: int = 0  # tasks of another FAB, run in a fresh flwr-clientapp process
    _app: tuple[str, ClientApp] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.poll <= 0:
            raise ValueError(f"poll must be positive, not {self.poll}")
        self._certificates = (
            None
            if self.insecure
            else validate_and_resolve_root_certificates(
                None if self.root_certificates is None else str(self.root_certificates),
                insecure=False,
            )
        )

    def _client(self, *interceptors: object) -> RuntimeHttpClient:
        return RuntimeHttpClient.from_server_address(
            server_address=self.runtime_api_address,
            insecure=self.insecure,
            root_certificates=self._certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec"), *interceptors],
            retry_invoker=make_simple_http_retry_invoker(),
        )

    def serve(self, stop: threading.Event | None = None) -> None:
        """Take and run tasks until ``stop`` is set (or forever)."""
        stop = stop or threading.Event()
        for module in self.preload:
            importlib.import_module(module)
        auth = (
            [
                SuperExecAuthHttpInterceptor(
                    master_secret=self.auth_secret, protected_methods=_AUTH_METHODS
                )
            ]
            if self.auth_secret
            else []
        )
        client = self._client(*auth)
        log(INFO, "Warm SuperExec: taking ClientApp tasks from %s", self.runtime_api_address)
        try:
            while not stop.is_set():
                res = client.AcquireTask(
                    AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
                )
                if not (res.HasField("task") and res.token):
                    stop.wait(self.poll)
                    continue
                if self._app is None or res.task.fab_hash == self._app[0]:
                    self.run_task(res.token)
                else:
                    self._forward(res.token)
        finally:
            client.close()

    def _forward(self, token: str) -> None:
        """Run a task of another FAB as Flower does: a fresh ``flwr-clientapp`` process."""
        args = ["flwr-clientapp", "--runtime-api-address", self.runtime_api_address]
        args += ["--token", token, "--parent-pid", str(os.getpid())]
        if self.insecure:
            args.append("--insecure")
        elif self.root_certificates is not None:
            args += ["--root-certificates", str(self.root_certificates)]
        subprocess.Popen(args)
        self.forwarded += 1

    def _load(self, run: object, fab: object) -> ClientApp:
        if self._app is not None and self._app[0] == fab.hash_str:
            return self._app[1]
        install_from_fab(fab.content, skip_prompt=True)
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        app = load(run.fab_id, run.fab_version, fab.hash_str)
        self._app = (fab.hash_str, app)
        return app

    def run_task(self, token: str) -> None:
        """One task, as ``flwr-clientapp`` runs it, in this process."""
        client = self._client(RuntimeTokenHttpInterceptor(token))
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message: Message | None = None
        reply: Message | None = None
        context: Context | None = None
        status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        times = [time.perf_counter()]
        try:
            message, context, run, fab = _pull_task_input(client)
            times.append(time.perf_counter())
            reply = self._load(run, fab)(message=message, context=context)
            times.append(time.perf_counter())
            status, details = SubStatus.COMPLETED, ""
        except Exception as error:  # a ClientApp's failure is its reply, as in Flower
            code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            reason = f"{type(error)}:<'{error}'>"
            if isinstance(error, LoadClientAppError):
                code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
                reason = "An exception was raised when attempting to load `ClientApp`"
            log(ERROR, "ClientApp raised an exception", exc_info=error)
            details = reason
            if message is not None:
                reply = Message(Error(code=code, reason=reason), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            except Exception as error:
                log(ERROR, "Failed to push reply message", exc_info=error)
            push_task_output(client=client, context=context, sub_status=status, details=details)
            if heartbeat.is_running:
                heartbeat.stop()
            client.close()
            self.ran += 1
            times.append(time.perf_counter())
            log(
                INFO,
                "Warm SuperExec: task %d, seconds %s (pull, app, push)",
                self.ran,
                [round(b - a, 3) for a, b in itertools.pairwise(times)],
            )


def _pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context, object, object]:
    """Flower's ``pull_task_input`` (``flwr-clientapp``), with a short pull backoff."""
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(
            client.ConfirmMessageReceived, node, context.run_id
        ),
        return_type=Message,
        initial_backoff=PULL_BACKOFF,
        backoff_cap=PULL_BACKOFF_CAP,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower sets it
    return message, context, run_from_proto(res.run), fab_from_proto(res.fab)


def run_warm_exec(executor: WarmExecutor, parent_pid: int | None = None) -> None:
    """The ``fedcore warm-exec`` process: serve until SIGTERM/SIGINT or the parent exits."""
    # a deployed process's log, as Flower's own executables write it
    logging.getLogger("flwr").setLevel(os.environ.get("FLWR_LOG_LEVEL", "INFO").upper())
    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        executor.serve()
    log(
        INFO,
        "Warm SuperExec: %d tasks in-process, %d forwarded, in %.0f s",
        executor.ran,
        executor.forwarded,
        time.monotonic() - started,
    )
