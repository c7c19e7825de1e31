"""The content registry's rules (the actors' use of it in a scan is in test_faults.py)."""
from __future__ import annotations

from jobs.dedupe import ContentRegistry, split_batch
from zoomin_core.records import Prepared


def _p(uri: str, image_id: str, status: str = "ok") -> Prepared:
    return Prepared(image_id, uri, status, None, 10, 10, None, b"", 0.0, 1)


def test_first_claim_wins_others_wait_and_published_rows_are_shared():
    reg = ContentRegistry()
    assert reg.claim(["a", "b"], "A") == ({}, [])
    assert reg.claim(["b", "c"], "B") == ({}, ["b"])          # b is A's: pending for B
    assert reg.lookup(["b"]) == ({}, ["b"])                  # still worth waiting for
    reg.publish({"b": "row-b"}, released=["a"])              # a failed at A: released
    assert reg.lookup(["a", "b"]) == ({"b": "row-b"}, [])    # a: nobody holds it any more
    assert reg.claim(["a", "b"], "B") == ({"b": "row-b"}, [])
    assert reg.claims == {"a": "B", "c": "B"}
    reg.drop_claims()
    assert reg.claim(["a"], "C") == ({}, [])


def test_the_registry_keeps_the_most_recent_rows_only():
    reg = ContentRegistry(max_rows=2)
    reg.publish({"a": 1, "b": 2}, [])
    reg.publish({"c": 3}, [])
    assert reg.lookup(["a", "b", "c"])[0] == {"b": 2, "c": 3}


def test_split_batch_examines_one_per_image_and_points_the_rest_at_their_source():
    ps = [_p("u0", "x"), _p("u1", "y"), _p("u2", "x"), _p("u3", "z"), _p("u4", "w"),
          _p("u5", "x", status="decode_error"), _p("u6", "y")]
    fresh, source = split_batch(ps, shared={"z": "row-z"}, pending={"w"})
    assert fresh == [0, 1, 5]                 # first x, first y, and every error row
    assert source == {2: ("batch", 0), 3: ("registry", "z"), 4: ("pending", "w"), 6: ("batch", 1)}


def test_a_restarted_actor_finds_its_own_claims(ray_local):
    """Ray restarts a dead model actor under the same actor id; the batch retried there must not
    wait for the claims its dead process made (they would never be published)."""
    import os

    import pytest
    import ray

    from jobs.dedupe import Client, start

    @ray.remote(max_restarts=1, max_task_retries=0, num_cpus=0)
    class Actor:
        def __init__(self, registry):
            self.client = Client(registry)

        def claim(self, ids):
            rows, pending = self.client.claim(ids)
            return rows, sorted(pending)

        def die(self):
            os._exit(1)

    registry = start("restart-test")
    a, b = Actor.remote(registry), Actor.remote(registry)
    assert ray.get(a.claim.remote(["x", "y"])) == ({}, [])
    assert ray.get(b.claim.remote(["y"])) == ({}, ["y"])        # another actor's claim: pending
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.die.remote())
    assert ray.get(a.claim.remote(["x", "y"])) == ({}, [])      # restarted: its own claims
