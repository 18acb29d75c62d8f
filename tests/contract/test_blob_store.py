"""Contract of the BlobStore port: every implementation must pass these."""

from __future__ import annotations

import pytest

from imagedist._domain import BlobRef
from imagedist._exceptions import Conflict, NotFound
from imagedist.abc import BlobProperties, BlobStore, CopyStatus

from .conftest import BlobHarness, MiB
from helpers import make_blob, pattern, run


async def settle(h: BlobHarness, store: BlobStore, ref: BlobRef) -> BlobProperties:
    """Poll the destination until its copy is no longer pending."""
    for _ in range(1000):
        props = await store.get_properties(ref)
        if props.copy_status != CopyStatus.PENDING:
            return props
        await h.clock.sleep(1.0)
    raise AssertionError(f"copy into {ref} still pending")


def need_throttled(h: BlobHarness) -> None:
    if h.throttled is None:
        pytest.skip(
            f"{h.kind} cannot hold a copy pending: Azurite finishes a copy inside its Copy Blob"
            " request; to run it, put a proxy in front of Azurite that answers copies as pending"
        )


# -- pages ----------------------------------------------------------------------------------------


def test_written_pages_read_back_and_holes_read_as_zeros(blobs: BlobHarness) -> None:
    ref, data = blobs.ref("disk.vhd"), pattern(64 * 1024)
    run(make_blob(blobs.store, ref, 4 * MiB, {MiB: data}))

    assert run(blobs.store.read(ref, MiB, len(data))) == data
    assert run(blobs.store.read(ref, 0, 4096)) == bytes(4096)
    assert run(blobs.store.read(ref, MiB - 512, 1024)) == bytes(512) + data[:512]
    props = run(blobs.store.get_properties(ref))
    assert (props.size, props.copy_status, props.metadata) == (4 * MiB, CopyStatus.NONE, {})


def test_page_ranges_are_the_written_ranges_merged_and_sorted(blobs: BlobHarness) -> None:
    ref = blobs.ref("disk.vhd")
    run(make_blob(blobs.store, ref, 8 * MiB, {5 * MiB: pattern(MiB), MiB: pattern(MiB)}))
    assert run(blobs.store.page_ranges(ref)) == [(MiB, 2 * MiB), (5 * MiB, 6 * MiB)]

    run(blobs.store.write_pages(ref, 2 * MiB, pattern(MiB)))
    assert run(blobs.store.page_ranges(ref)) == [(MiB, 3 * MiB), (5 * MiB, 6 * MiB)]


def test_a_new_blob_has_no_page_ranges(blobs: BlobHarness) -> None:
    ref = blobs.ref("empty.vhd")
    run(blobs.store.create_page_blob(ref, 64 * MiB))
    assert run(blobs.store.page_ranges(ref)) == []
    assert run(blobs.store.get_properties(ref)).size == 64 * MiB


@pytest.mark.parametrize("size", [0, -512, 1000, 512 * 3 + 1])
def test_size_must_be_a_positive_multiple_of_512(blobs: BlobHarness, size: int) -> None:
    with pytest.raises(ValueError):
        run(blobs.store.create_page_blob(blobs.ref("bad.vhd"), size))


@pytest.mark.parametrize(
    ("offset", "length"),
    [(100, 512), (512, 100), (0, 0), (MiB - 512, 1024), (MiB, 512), (-512, 512)],
    ids=["misaligned-offset", "misaligned-length", "empty", "past-end", "at-end", "negative"],
)
def test_writes_must_be_aligned_and_inside_the_blob(
    blobs: BlobHarness, offset: int, length: int
) -> None:
    ref = blobs.ref("disk.vhd")
    run(blobs.store.create_page_blob(ref, MiB))
    with pytest.raises(ValueError):
        run(blobs.store.write_pages(ref, offset, pattern(length)))
    assert run(blobs.store.page_ranges(ref)) == []


def test_a_missing_blob_is_not_found(blobs: BlobHarness) -> None:
    ref, store = blobs.ref("missing.vhd"), blobs.store
    for call in (
        lambda: store.write_pages(ref, 0, pattern(512)),
        lambda: store.read(ref, 0, 512),
        lambda: store.page_ranges(ref),
        lambda: store.get_properties(ref),
        lambda: store.set_metadata(ref, {"a": "b"}),
    ):
        with pytest.raises(NotFound):
            run(call())


def test_create_again_with_the_same_size_keeps_the_pages(blobs: BlobHarness) -> None:
    ref, data = blobs.ref("disk.vhd"), pattern(MiB)
    run(make_blob(blobs.store, ref, 4 * MiB, {0: data}))

    run(blobs.store.create_page_blob(ref, 4 * MiB))  # an upload resuming

    assert run(blobs.store.read(ref, 0, MiB)) == data


def test_create_again_with_another_size_conflicts_unless_overwriting(blobs: BlobHarness) -> None:
    ref = blobs.ref("disk.vhd")
    run(make_blob(blobs.store, ref, 4 * MiB, {0: pattern(MiB)}))
    with pytest.raises(Conflict):
        run(blobs.store.create_page_blob(ref, 2 * MiB))

    run(blobs.store.create_page_blob(ref, 2 * MiB, overwrite=True))

    assert run(blobs.store.get_properties(ref)).size == 2 * MiB
    assert run(blobs.store.read(ref, 0, MiB)) == bytes(MiB)
    assert run(blobs.store.page_ranges(ref)) == []


def test_metadata_is_replaced(blobs: BlobHarness) -> None:
    ref = blobs.ref("disk.vhd")
    run(blobs.store.create_page_blob(ref, MiB))
    run(blobs.store.set_metadata(ref, {"job": "j1", "sha": "abc"}))
    run(blobs.store.set_metadata(ref, {"job": "j2"}))
    assert run(blobs.store.get_properties(ref)).metadata == {"job": "j2"}


def test_content_md5_is_stored_and_kept_by_metadata_changes(blobs: BlobHarness) -> None:
    ref = blobs.ref("disk.vhd")
    run(blobs.store.create_page_blob(ref, MiB))
    assert run(blobs.store.get_properties(ref)).content_md5 is None
    digest = bytes(range(16))
    run(blobs.store.set_content_md5(ref, digest))
    run(blobs.store.set_metadata(ref, {"job": "j1"}))
    assert run(blobs.store.get_properties(ref)).content_md5 == digest


# -- delete and list ------------------------------------------------------------------------------


def test_delete_is_idempotent(blobs: BlobHarness) -> None:
    ref = blobs.ref("disk.vhd")
    run(blobs.store.create_page_blob(ref, MiB))
    assert run(blobs.store.delete_blob(ref)) is True
    assert run(blobs.store.delete_blob(ref)) is False
    assert run(blobs.store.delete_blob(blobs.ref("never.vhd"))) is False
    with pytest.raises(NotFound):
        run(blobs.store.get_properties(ref))
    assert run(blobs.store.list_blobs(blobs.account, blobs.container)) == []


def test_list_blobs_filters_by_prefix_and_sorts(blobs: BlobHarness) -> None:
    names = ["b.vhd", "a/2.vhd", "ab.vhd", "a/1.vhd", "a/deep/3.vhd"]
    for name in names:
        run(blobs.store.create_page_blob(blobs.ref(name), 512))
        run(blobs.store.set_metadata(blobs.ref(name), {"k": "v"}))  # sidecars must not show

    def listed(prefix: str) -> list[str]:
        return run(blobs.store.list_blobs(blobs.account, blobs.container, prefix))

    assert listed("") == sorted(names)
    assert listed("a/") == ["a/1.vhd", "a/2.vhd", "a/deep/3.vhd"]
    assert listed("a") == ["a/1.vhd", "a/2.vhd", "a/deep/3.vhd", "ab.vhd"]
    assert listed("zzz") == []
    assert run(blobs.store.list_blobs(blobs.account, "nosuchcontainer")) == []


# -- copies ---------------------------------------------------------------------------------------


def test_copy_completes_with_the_same_data_and_metadata(blobs: BlobHarness) -> None:
    src, dst = blobs.ref("golden.vhd"), blobs.ref("copies/golden.vhd", blobs.other_account)
    writes = {0: pattern(MiB), 3 * MiB: pattern(MiB, seed=7)}
    run(make_blob(blobs.store, src, 8 * MiB, writes))
    run(blobs.store.set_metadata(src, {"sha256": "abc"}))
    run(blobs.store.set_content_md5(src, b"0123456789abcdef"))

    copy_id = run(blobs.store.start_copy(src, dst))
    props = run(settle(blobs, blobs.store, dst))

    assert props.copy_status == CopyStatus.SUCCESS, props.copy_error
    assert (props.copy_id, props.copy_source, props.size) == (copy_id, str(src), 8 * MiB)
    assert props.copy_progress == props.copy_total >= 2 * MiB
    assert props.metadata == {"sha256": "abc"}
    assert props.content_md5 == b"0123456789abcdef"  # Copy Blob carries it, as on Azure
    assert run(blobs.store.read(dst, 0, 8 * MiB)) == run(blobs.store.read(src, 0, 8 * MiB))
    assert run(blobs.store.page_ranges(dst)) == run(blobs.store.page_ranges(src))


def test_copy_of_a_missing_source_is_not_found(blobs: BlobHarness) -> None:
    with pytest.raises(NotFound):
        run(blobs.store.start_copy(blobs.ref("missing.vhd"), blobs.ref("dst.vhd")))


def test_copy_overwrites_an_existing_destination(blobs: BlobHarness) -> None:
    src, dst = blobs.ref("golden.vhd"), blobs.ref("dst.vhd", blobs.other_account)
    run(make_blob(blobs.store, src, 2 * MiB, {MiB: pattern(MiB)}))
    run(make_blob(blobs.store, dst, 4 * MiB, {0: pattern(MiB, seed=9)}))

    run(blobs.store.start_copy(src, dst))
    props = run(settle(blobs, blobs.store, dst))

    assert (props.copy_status, props.size) == (CopyStatus.SUCCESS, 2 * MiB)
    assert run(blobs.store.read(dst, 0, 2 * MiB)) == bytes(MiB) + pattern(MiB)


def test_a_second_copy_conflicts_while_one_is_pending(blobs: BlobHarness) -> None:
    need_throttled(blobs)
    assert blobs.throttled
    slow = blobs.throttled(MiB)
    src, dst = blobs.ref("golden.vhd"), blobs.ref("dst.vhd", blobs.other_account)
    run(make_blob(slow, src, 8 * MiB, {0: pattern(4 * MiB)}))
    run(slow.start_copy(src, dst))

    with pytest.raises(Conflict):
        run(slow.start_copy(src, dst))

    assert run(settle(blobs, slow, dst)).copy_status == CopyStatus.SUCCESS
    run(slow.start_copy(src, dst))  # a finished copy does not block the next one


def test_abort_stops_a_pending_copy(blobs: BlobHarness) -> None:
    need_throttled(blobs)
    assert blobs.throttled
    slow = blobs.throttled(MiB)
    src, dst = blobs.ref("golden.vhd"), blobs.ref("dst.vhd", blobs.other_account)
    run(make_blob(slow, src, 8 * MiB, {0: pattern(4 * MiB)}))
    copy_id = run(slow.start_copy(src, dst))
    with pytest.raises(NotFound):
        run(slow.abort_copy(dst, "not-" + copy_id))

    run(slow.abort_copy(dst, copy_id))

    blobs.clock.advance(60)
    props = run(slow.get_properties(dst))
    assert (props.copy_status, props.copy_id) == (CopyStatus.ABORTED, copy_id)
    assert props.copy_progress < props.copy_total
    with pytest.raises(NotFound):
        run(slow.abort_copy(dst, copy_id))


def test_abort_without_a_pending_copy_is_not_found(blobs: BlobHarness) -> None:
    ref = blobs.ref("disk.vhd")
    with pytest.raises(NotFound):
        run(blobs.store.abort_copy(ref, "nope"))
    run(blobs.store.create_page_blob(ref, MiB))
    with pytest.raises(NotFound):
        run(blobs.store.abort_copy(ref, "nope"))


def test_an_injected_copy_failure_is_reported(blobs: BlobHarness) -> None:
    if blobs.failing_account is None:
        pytest.skip(
            f"{blobs.kind} cannot inject copy failures: Azurite has no fault hook; to run it, put"
            " a proxy in front of Azurite that fails copies into one account"
        )
    src, dst = blobs.ref("golden.vhd"), blobs.ref("dst.vhd", blobs.failing_account)
    run(make_blob(blobs.store, src, 2 * MiB, {0: pattern(MiB)}))

    run(blobs.store.start_copy(src, dst))
    props = run(settle(blobs, blobs.store, dst))

    assert props.copy_status == CopyStatus.FAILED
    assert blobs.failing_account in props.copy_error


def test_a_copy_fails_when_its_source_is_deleted(blobs: BlobHarness) -> None:
    need_throttled(blobs)
    assert blobs.throttled
    slow = blobs.throttled(MiB)
    src, dst = blobs.ref("golden.vhd"), blobs.ref("dst.vhd", blobs.other_account)
    run(make_blob(slow, src, 8 * MiB, {0: pattern(4 * MiB)}))
    run(slow.start_copy(src, dst))
    blobs.clock.advance(1)
    assert run(slow.get_properties(dst)).copy_status == CopyStatus.PENDING

    run(slow.delete_blob(src))
    props = run(settle(blobs, slow, dst))

    assert props.copy_status == CopyStatus.FAILED
    assert str(src) in props.copy_error


def test_copy_advances_at_the_configured_bandwidth(blobs: BlobHarness) -> None:
    need_throttled(blobs)
    assert blobs.throttled
    slow = blobs.throttled(MiB)
    src, dst = blobs.ref("golden.vhd"), blobs.ref("dst.vhd", blobs.other_account)
    run(make_blob(slow, src, 16 * MiB, {MiB: pattern(2 * MiB), 8 * MiB: pattern(2 * MiB)}))
    run(slow.start_copy(src, dst))

    blobs.clock.advance(1)
    props = run(slow.get_properties(dst))
    assert props.copy_status == CopyStatus.PENDING
    assert props.copy_total == 4 * MiB
    assert MiB // 2 <= props.copy_progress <= 3 * MiB // 2

    blobs.clock.advance(2.5)
    props = run(slow.get_properties(dst))
    assert props.copy_status == CopyStatus.PENDING
    assert props.copy_progress < props.copy_total

    blobs.clock.advance(1)
    props = run(slow.get_properties(dst))
    assert (props.copy_status, props.copy_progress) == (CopyStatus.SUCCESS, 4 * MiB)
    assert run(slow.read(dst, 0, 16 * MiB)) == run(slow.read(src, 0, 16 * MiB))


def test_a_copy_outlives_the_adapter_that_started_it(blobs: BlobHarness) -> None:
    need_throttled(blobs)
    assert blobs.throttled
    src, dst = blobs.ref("golden.vhd"), blobs.ref("dst.vhd", blobs.other_account)
    starter = blobs.throttled(MiB)
    run(make_blob(starter, src, 8 * MiB, {0: pattern(4 * MiB)}))
    copy_id = run(starter.start_copy(src, dst))
    del starter  # the process that started the copy is gone

    blobs.clock.advance(1)
    props = run(blobs.throttled(MiB).get_properties(dst))
    assert (props.copy_status, props.copy_id) == (CopyStatus.PENDING, copy_id)
    assert props.copy_progress > 0

    props = run(settle(blobs, blobs.reopen(), dst))
    assert (props.copy_status, props.copy_id) == (CopyStatus.SUCCESS, copy_id)
    assert run(blobs.store.read(dst, 0, 8 * MiB)) == run(blobs.store.read(src, 0, 8 * MiB))
