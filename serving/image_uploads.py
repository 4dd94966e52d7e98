"""`POST /v1/items/image`: a multipart form with one photograph, read and checked.

The form's text fields are an `ImageArtwork` (the fields of `POST /v1/items` but the
features); the `image` part is a JPEG, PNG or WebP file of at most `max_image_bytes`. Form
values are text, so booleans are read as form values are (`true`/`false`, `1`/`0`, `on`/`off`)
while unknown fields, missing ones and ids outside the alphabet are refused by name.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from serving.bodies import describe_errors, require_identity_encoding
from serving.errors import BadRequest, PayloadTooLarge, RequestError, UnsupportedMediaType
from serving.schemas import TIME_FIELD, Id, OptionalId

IMAGE_FIELD = "image"


class ImageArtwork(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: Id
    artist_id: OptionalId = ""
    one_of_a_kind: bool = True
    upload_time: datetime | None = Field(
        None,
        description=TIME_FIELD,
    )


async def read_image_upload(request: Request, max_bytes: int) -> tuple[ImageArtwork, bytes]:
    """The form's fields and the image's bytes; a RequestError (4xx) naming the field."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"body: Content-Type {content_type!r} is not supported, send multipart/form-data "
            f"with the fields of ImageArtwork and an `{IMAGE_FIELD}` file"
        )
    require_identity_encoding(request)
    try:
        form = await request.form(max_files=1, max_fields=8, max_part_size=64 * 1024)
    except MultiPartException as error:
        raise BadRequest(f"body: not a valid multipart form ({error.message})") from None
    try:
        upload = form.get(IMAGE_FIELD)
        if not isinstance(upload, UploadFile):
            raise RequestError(f"{IMAGE_FIELD}: required, a file part (JPEG, PNG or WebP)")
        fields: dict[str, str] = {}
        for key, value in form.multi_items():
            if key == IMAGE_FIELD:
                continue
            if not isinstance(value, str):
                raise RequestError(f"{key}: a text field, not a file")
            if key in fields:
                raise RequestError(f"{key}: given twice")
            fields[key] = value
        try:
            artwork = ImageArtwork.model_validate(fields)
        except ValidationError as error:
            errors = error.errors(include_input=False, include_url=False)
            raise RequestError(describe_errors(errors)) from None
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"{IMAGE_FIELD}: larger than max_image_bytes ({max_bytes} bytes)")
        return artwork, data
    finally:
        await form.close()


def multipart_spec() -> dict:
    """`openapi_extra` of the upload route: the form as OpenAPI 3.0 describes one."""
    schema = ImageArtwork.model_json_schema()
    properties = {
        "item_id": schema["properties"]["item_id"],
        "artist_id": schema["properties"]["artist_id"],
        "one_of_a_kind": {"type": "boolean", "default": True},
        "upload_time": {
            "type": "string",
            "format": "date-time",
            "description": "default: now; more than 5 minutes ahead of the service's clock: 409",
        },
        IMAGE_FIELD: {"type": "string", "format": "binary", "description": "JPEG, PNG or WebP"},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": properties,
                        "required": ["item_id", IMAGE_FIELD],
                        "additionalProperties": False,
                    }
                }
            },
        }
    }
