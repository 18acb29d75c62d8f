"""Records to flat fields and back: the one codec of the SQLite and the Table state stores.

Both stores keep a job, a source and a target as one flat record whose field names are the SQLite
columns and the Table entity's properties alike. The fields hold plain values (``str``, ``int``,
``float``, ``bool``, ``None``); each store adds only what its medium needs (SQLite: the column
order; Tables: keys, Int64 typing, truncation). A field may be missing on read (an entity written
by an older version, or a ``None`` a Table entity omits): it reads as its dataclass default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._domain import (
    BlobRef,
    FailedPhase,
    HyperVGeneration,
    Job,
    JobState,
    LogRecord,
    OsType,
    SourceKind,
    SourceRow,
    SourceState,
    TargetRow,
    TargetState,
)
from .._domain.publications import GalleryRef, PublicationRow, PublicationState, RegionStatus

__all__ = [
    "JOB_FIELDS",
    "LOG_FIELDS",
    "PUBLICATION_FIELDS",
    "SOURCE_FIELDS",
    "TARGET_FIELDS",
    "Fields",
    "job_fields",
    "job_from",
    "log_fields",
    "log_from",
    "publication_fields",
    "publication_from",
    "source_fields",
    "source_from",
    "target_fields",
    "target_from",
]

Fields = dict[str, Any]

# In the order of the SQLite tables' columns.
JOB_FIELDS = [
    "id",
    "image_name",
    "os_type",
    "source_path",
    "size_bytes",
    "created_at",
    "description",
    "state",
    "finished_at",
    "source_disk",
    "input_path",
    "revision",
    "hyper_v_generation",
    "publish",
    "gallery_version",
]
SOURCE_FIELDS = [
    "job_id",
    "source_id",
    "kind",
    "account",
    "container",
    "blob",
    "state",
    "parent_id",
    "progress_bytes",
    "deleted",
    "error",
    "lease_owner",
    "lease_until",
    "version",
    "content_md5",
]
TARGET_FIELDS = [
    "job_id",
    "target",
    "subscription",
    "region",
    "account",
    "container",
    "blob",
    "resource_group",
    "image_name",
    "state",
    "source_id",
    "copy_id",
    "failed_phase",
    "error",
    "attempts",
    "blob_deleted",
    "lease_owner",
    "lease_until",
    "version",
    "updated_at",
]
PUBLICATION_FIELDS = [
    "job_id",
    "key",
    "gallery_subscription",
    "gallery_resource_group",
    "gallery",
    "definition",
    "version_name",
    "region",
    "regions",
    "state",
    "source_id",
    "error",
    "attempts",
    "lease_owner",
    "lease_until",
    "version",
    "updated_at",
]
LOG_FIELDS = ["job_id", "ts", "level", "step", "target", "message", "extra"]


def job_fields(job: Job) -> Fields:
    return {
        "id": job.id,
        "image_name": job.image_name,
        "os_type": job.os_type.value,
        "source_path": job.source_path,
        "size_bytes": job.size_bytes,
        "created_at": float(job.created_at),
        "description": job.description,
        "state": job.state.value,
        "finished_at": _opt_float(job.finished_at),
        "source_disk": job.source_disk,
        "input_path": job.input_path,
        "revision": job.revision,
        "hyper_v_generation": job.hyper_v_generation.value,
        "publish": ",".join(job.publish),
        "gallery_version": job.gallery_version,
    }


def job_from(fields: Mapping[str, Any]) -> Job:
    return Job(
        id=str(fields["id"]),
        image_name=str(fields["image_name"]),
        os_type=OsType(fields["os_type"]),
        source_path=str(fields["source_path"]),
        size_bytes=int(fields["size_bytes"]),
        # Azurite may return a whole Double as a JSON integer without a type annotation.
        created_at=float(fields["created_at"]),
        description=str(fields.get("description") or ""),
        state=JobState(fields["state"]),
        finished_at=_opt_float(fields.get("finished_at")),
        source_disk=str(fields.get("source_disk") or ""),
        input_path=str(fields.get("input_path") or ""),
        revision=int(fields.get("revision") or 0),
        hyper_v_generation=HyperVGeneration(fields.get("hyper_v_generation") or "V1"),
        publish=tuple(str(fields.get("publish") or "images").split(",")),
        gallery_version=str(fields.get("gallery_version") or ""),
    )


def source_fields(row: SourceRow) -> Fields:
    return {
        "job_id": row.job_id,
        "source_id": row.source_id,
        "kind": row.kind.value,
        **_blob_fields(row.blob),
        "state": row.state.value,
        "parent_id": row.parent_id,
        "progress_bytes": row.progress_bytes,
        "deleted": bool(row.deleted),
        "error": row.error,
        "lease_owner": row.lease_owner,
        "lease_until": float(row.lease_until),
        "version": row.version,
        "content_md5": row.content_md5,
    }


def source_from(fields: Mapping[str, Any]) -> SourceRow:
    return SourceRow(
        job_id=str(fields["job_id"]),
        source_id=str(fields["source_id"]),
        kind=SourceKind(fields["kind"]),
        blob=_blob_from(fields),
        state=SourceState(fields["state"]),
        parent_id=_opt_str(fields.get("parent_id")),
        progress_bytes=int(fields["progress_bytes"]),
        deleted=bool(fields["deleted"]),
        error=str(fields.get("error") or ""),
        lease_owner=_opt_str(fields.get("lease_owner")),
        lease_until=float(fields["lease_until"]),
        version=int(fields["version"]),
        content_md5=str(fields.get("content_md5") or ""),
    )


def target_fields(row: TargetRow) -> Fields:
    return {
        "job_id": row.job_id,
        "target": row.target,
        "subscription": row.subscription,
        "region": row.region,
        **_blob_fields(row.blob),
        "resource_group": row.resource_group,
        "image_name": row.image_name,
        "state": row.state.value,
        "source_id": row.source_id,
        "copy_id": row.copy_id,
        "failed_phase": row.failed_phase.value if row.failed_phase else None,
        "error": row.error,
        "attempts": row.attempts,
        "blob_deleted": bool(row.blob_deleted),
        "lease_owner": row.lease_owner,
        "lease_until": float(row.lease_until),
        "version": row.version,
        "updated_at": float(row.updated_at),
    }


def target_from(fields: Mapping[str, Any]) -> TargetRow:
    phase = fields.get("failed_phase")
    return TargetRow(
        job_id=str(fields["job_id"]),
        target=str(fields["target"]),
        subscription=str(fields["subscription"]),
        region=str(fields["region"]),
        blob=_blob_from(fields),
        resource_group=str(fields["resource_group"]),
        image_name=str(fields["image_name"]),
        state=TargetState(fields["state"]),
        source_id=_opt_str(fields.get("source_id")),
        copy_id=str(fields.get("copy_id") or ""),
        failed_phase=FailedPhase(phase) if phase else None,
        error=str(fields.get("error") or ""),
        attempts=int(fields["attempts"]),
        blob_deleted=bool(fields["blob_deleted"]),
        lease_owner=_opt_str(fields.get("lease_owner")),
        lease_until=float(fields["lease_until"]),
        version=int(fields["version"]),
        updated_at=float(fields["updated_at"]),
    )


def publication_fields(row: PublicationRow) -> Fields:
    regions = {
        name: {"state": r.state, "progress": r.progress, "error": r.error}
        for name, r in sorted(row.regions.items())
    }
    return {
        "job_id": row.job_id,
        "key": row.key,
        "gallery_subscription": row.gallery.subscription,
        "gallery_resource_group": row.gallery.resource_group,
        "gallery": row.gallery.name,
        "definition": row.definition,
        "version_name": row.version_name,
        "region": row.region,
        "regions": json.dumps(regions, separators=(",", ":")),
        "state": row.state.value,
        "source_id": row.source_id,
        "error": row.error,
        "attempts": row.attempts,
        "lease_owner": row.lease_owner,
        "lease_until": float(row.lease_until),
        "version": row.version,
        "updated_at": float(row.updated_at),
    }


def publication_from(fields: Mapping[str, Any]) -> PublicationRow:
    regions = json.loads(str(fields.get("regions") or "{}"))
    return PublicationRow(
        job_id=str(fields["job_id"]),
        key=str(fields["key"]),
        gallery=GalleryRef(
            str(fields["gallery_subscription"]),
            str(fields["gallery_resource_group"]),
            str(fields["gallery"]),
        ),
        definition=str(fields["definition"]),
        version_name=str(fields["version_name"]),
        region=str(fields["region"]),
        regions={
            str(name): RegionStatus(str(r["state"]), int(r["progress"]), str(r["error"]))
            for name, r in regions.items()
        },
        state=PublicationState(fields["state"]),
        source_id=str(fields.get("source_id") or ""),
        error=str(fields.get("error") or ""),
        attempts=int(fields["attempts"]),
        lease_owner=_opt_str(fields.get("lease_owner")),
        lease_until=float(fields["lease_until"]),
        version=int(fields["version"]),
        updated_at=float(fields["updated_at"]),
    )


def log_fields(record: LogRecord, extra: str | None = None) -> Fields:
    """:param extra: the JSON of ``record.extra`` when the store shortened it."""
    return {
        "job_id": record.job_id,
        "ts": float(record.ts),
        "level": record.level,
        "step": record.step,
        "target": record.target,
        "message": record.message,
        "extra": json.dumps(record.extra) if extra is None else extra,
    }


def log_from(fields: Mapping[str, Any]) -> LogRecord:
    try:
        extra = json.loads(str(fields.get("extra") or "{}"))
    except ValueError:  # a line is never lost to a damaged extra
        extra = {}
    return LogRecord(
        job_id=str(fields["job_id"]),
        ts=float(fields["ts"]),
        level=str(fields["level"]),
        step=str(fields["step"]),
        message=str(fields.get("message") or ""),
        target=str(fields.get("target") or ""),
        extra={str(k): str(v) for k, v in extra.items()} if isinstance(extra, dict) else {},
    )


def _blob_fields(blob: BlobRef) -> Fields:
    return {"account": blob.account, "container": blob.container, "blob": blob.name}


def _blob_from(fields: Mapping[str, Any]) -> BlobRef:
    return BlobRef(str(fields["account"]), str(fields["container"]), str(fields["blob"]))


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
