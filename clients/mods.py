"""Client mods that the run's privacy settings ask for.

Client-level DP with client-side clipping uses Flower's own ``fixedclipping_mod`` and
``adaptiveclipping_mod`` unchanged; :func:`dp_clipping_mod` picks the one the run config
names, so the same ClientApp serves every scenario (also under ``flwr run``, where the config
arrives with the run rather than at construction).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message, MessageType
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedcore.config import RunConfig


def dp_clipping_mod(resolve: Callable[[Context], RunConfig]) -> Mod:
    """A mod that clips training replies with Flower's clipping mod when the run has
    ``privacy.dp = "client"`` with ``privacy.clipping = "client"``, or distributed DP, and
    passes otherwise (an algorithm on typed statistics clips its own wire vector)."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        cfg = resolve(context)
        p = cfg.privacy
        clipped_here = p.dp == "distributed" or (p.dp, p.clipping) == ("client", "client")
        if msg.metadata.message_type != MessageType.TRAIN or not clipped_here:
            return call_next(msg, context)
        from fedcore.tasks import Algorithm, get_task  # torch: only where a client trains

        if isinstance(get_task(cfg.task), Algorithm):  # its handler clips the wire vector
            return call_next(msg, context)
        flower_mod = adaptiveclipping_mod if p.adaptive else fixedclipping_mod
        return flower_mod(msg, context, call_next)

    return mod
