"""Remote-write's MetricMetadata (prometheus/prompb types.proto), read from the bytes that
WriteRequest.metadata keeps undecoded (remote_write.proto).

The message class is built by the protobuf library from a descriptor declared here (the
generated remote_write_pb2 predates this message and there is no protoc in the build), so
decoding is protobuf's, not hand-written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from opspilot.domain.errors import ValidationError
from opspilot.domain.metrics import MetricMetadata, MetricType

# prompb.MetricMetadata.MetricType: the types Prometheus' metadata API names as OpsPilot's.
_TYPES = {1: MetricType.COUNTER, 2: MetricType.GAUGE, 3: MetricType.HISTOGRAM,
          4: MetricType.HISTOGRAM, 5: MetricType.SUMMARY}  # 4: gauge histogram


def _message_class() -> Any:
    fields = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="opspilot/remote_write_metadata.proto", package="opspilot.remote_write",
        syntax="proto3")
    message = proto.message_type.add(name="MetricMetadata")
    for name, number, kind in (("type", 1, fields.TYPE_INT32),
                               ("metric_family_name", 2, fields.TYPE_STRING),
                               ("help", 4, fields.TYPE_STRING), ("unit", 5, fields.TYPE_STRING)):
        message.field.add(name=name, number=number, type=kind, label=fields.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("opspilot.remote_write.MetricMetadata"))


MetricMetadataMessage = _message_class()


def decoded_metadata(raw: Sequence[bytes]) -> tuple[list[MetricMetadata], int]:
    """The described families (an enum type read as int32: unknown numbers, `unknown`), and
    how many entries could not be read (not a MetricMetadata, no family name, or text the
    stores cannot hold): those describe nothing, the request's samples are kept."""
    found: list[MetricMetadata] = []
    unreadable = 0
    for item in raw:
        message = MetricMetadataMessage()
        try:
            message.ParseFromString(item)
            if not message.metric_family_name:
                raise ValidationError("metadata", "no metric_family_name")
            found.append(MetricMetadata(message.metric_family_name,
                                        _TYPES.get(message.type, MetricType.UNKNOWN),
                                        message.help, message.unit))
        except (DecodeError, ValidationError):
            unreadable += 1
    return found, unreadable
