"""Rank 0's rendezvous store listens on the address it is given only, not on every interface
(torch's own server would), and the other ranks join it there."""

import os
from datetime import timedelta

import psutil
import torch.distributed as dist

from itk_rl.trainer.sharding import serve_store


def test_the_rendezvous_store_listens_on_its_address_only() -> None:
    store, listener = serve_store("127.0.0.1", world_size=2)
    try:
        listening = [
            c.laddr
            for c in psutil.Process(os.getpid()).net_connections()
            if c.status == psutil.CONN_LISTEN and c.laddr.port == store.port
        ]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", store.port)]
        client = dist.TCPStore("127.0.0.1", store.port, 2, False, timedelta(seconds=30))
        client.set("rank1", "joined")
        assert store.get("rank1") == b"joined"
    finally:
        listener.close()
