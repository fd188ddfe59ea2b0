"""The operator's one door to the Kubernetes API: a thin, blocking adapter, plus the pure
decision of what to send.

Why a module of its own: the kopf handlers stay short (parse, build, adopt, apply, report),
and the tests see exactly what reached the API (the `kmock` server records every request).

Why plain REST paths instead of the typed client classes: the operator touches eight kinds
with the same few verbs. One request function and a table of plurals are smaller than eight
typed APIs, and they hand back the server's JSON as plain dicts, the very shape the builders
produce and `patch_ops` compares against. Authentication, TLS and token refresh still come
from the official client's `Configuration` (in-cluster service account, else kubeconfig).

How `Kube.apply` decides (the pure `patch_ops`):
* A missing object is created.
* An existing object is patched with a JSON patch that replaces, wholesale, every top-level
  field the builders set under `spec` (or a ConfigMap's `data`), and merges our labels,
  annotations and owner reference into its metadata. Wholesale, because a value removed from
  the desired object (a toleration, a setting, the default anti-affinity the user replaced)
  must go from the cluster too, which a merge patch would keep. Fields the builders never set
  (a Service's clusterIP, the defaults the API server filled in, `status`) are left alone.
* Nothing is sent when the object still carries the hash of this very desired object (the
  annotation `distcluster.io/applied-hash`) and still holds every desired value: the timer
  re-asserts every child every few seconds and must not write when nothing changed. The hash
  sees what a containment check cannot (a value removed from the desired object); the
  containment check sees hand edits that leave the hash alone (`kubectl scale statefulset`).
* Otherwise only the fields that moved are replaced: the object also carries one hash per
  replaced field (`distcluster.io/applied-fields`), and a field whose hash is the desired
  one and whose value still holds is left out of the patch. A resize therefore sends
  `/spec/replicas` alone and never rewrites the StatefulSet's pod template, so nothing in
  an audit log or a server-side default can turn a resize into a rollout. An object
  without the per-field hashes (applied by an older operator) gets every field once.

Every call blocks (urllib3): the async handlers run them through `asyncio.to_thread`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, load_incluster_config, load_kube_config

from distcluster_operator import crd

Obj = dict[str, Any]
Action = Literal["created", "patched", "unchanged"]

APPLIED_HASH_ANNOTATION = f"{crd.GROUP}/applied-hash"
APPLIED_FIELDS_ANNOTATION = f"{crd.GROUP}/applied-fields"
DEFAULT_TIMEOUT_S = 15.0

# (apiVersion, kind) -> plural, for every kind the operator reads or writes.
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Pod"): "pods",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    (crd.API_VERSION, crd.KIND): crd.PLURAL,
}

# Top-level keys that identify an object or are written by others, never replaced by apply.
_NOT_OWNED = frozenset({"apiVersion", "kind", "metadata", "status"})


def resource_path(
    api_version: str,
    kind: str,
    namespace: str,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a namespaced collection, or of one object (and its subresource)."""
    plural = PLURALS.get((api_version, kind))
    if plural is None:
        raise ValueError(f"the operator does not handle {kind} of {api_version}")
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{root}/namespaces/{quote(namespace, safe='')}/{plural}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
        if subresource is not None:
            path += f"/{subresource}"
    return path


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def applied_hash(obj: Mapping[str, Any]) -> str:
    """A short, stable digest of an object as the operator wants it (without its stamps)."""
    plain = copy.deepcopy(dict(obj))
    metadata = plain.get("metadata", {})
    for stamp in (APPLIED_HASH_ANNOTATION, APPLIED_FIELDS_ANNOTATION):
        metadata.get("annotations", {}).pop(stamp, None)
    if not metadata.get("annotations", True):
        del metadata["annotations"]  # Stamping an object without annotations added the map.
    return _digest(plain)


def owned_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The fields `apply` replaces wholesale, by JSON pointer: each key under `spec`, and
    every other top-level section that is not identity or status (a ConfigMap's `data`)."""
    fields: dict[str, Any] = {}
    for section, value in obj.items():
        if section in _NOT_OWNED:
            continue
        if section == "spec" and isinstance(value, Mapping):
            for key, item in value.items():
                fields[f"/spec/{_pointer(key)}"] = item
        else:
            fields[f"/{_pointer(section)}"] = value
    return fields


def field_hashes(obj: Mapping[str, Any]) -> dict[str, str]:
    """One digest per owned field (the `applied-fields` annotation, decoded)."""
    return {path: _digest(value) for path, value in owned_fields(obj).items()}


def stamped(obj: Mapping[str, Any]) -> Obj:
    """A copy of `obj` carrying its own `applied_hash` and `field_hashes` as annotations."""
    result = copy.deepcopy(dict(obj))
    annotations = result.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[APPLIED_HASH_ANNOTATION] = applied_hash(obj)
    fields = json.dumps(field_hashes(obj), sort_keys=True, separators=(",", ":"))
    annotations[APPLIED_FIELDS_ANNOTATION] = fields
    return result


def recorded_field_hashes(obj: Mapping[str, Any]) -> dict[str, str]:
    """The per-field hashes an object carries; empty when it has none or they do not parse
    (then every field is replaced, as for an object applied by an older operator)."""
    text = obj.get("metadata", {}).get("annotations", {}).get(APPLIED_FIELDS_ANNOTATION)
    try:
        recorded = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {str(path): str(digest) for path, digest in recorded.items()}


def contains(actual: Any, wanted: Any) -> bool:
    """Whether `actual` holds every value of `wanted`: extra keys in mappings are allowed
    (the API server adds defaults), lists must match item by item, and a number equals its
    string (the server writes quantities such as `cpu: 1` back as `"1"`)."""
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and contains(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    if actual == wanted:
        return True
    return {type(actual), type(wanted)} in ({int, str}, {float, str}) and str(actual) == str(wanted)


def is_current(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether `existing` already is the stamped `desired` object (see the module doc)."""
    have = existing.get("metadata", {}).get("annotations", {}).get(APPLIED_HASH_ANNOTATION)
    want = desired.get("metadata", {}).get("annotations", {}).get(APPLIED_HASH_ANNOTATION)
    return have is not None and have == want and contains(existing, desired)


def patch_ops(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> list[Obj]:
    """The JSON patch turning `existing` into the stamped `desired` object; empty when
    `existing` is current. See the module doc for what is replaced and what is kept."""
    if is_current(existing, desired):
        return []
    have_meta = existing.get("metadata", {})
    want_meta = desired.get("metadata", {})
    ops: list[Obj] = []
    for key in ("labels", "annotations"):
        merged = {**have_meta.get(key, {}), **want_meta.get(key, {})}
        ops.append({"op": "add", "path": f"/metadata/{key}", "value": merged})
    if "ownerReferences" in want_meta:
        owners = _merged_owners(have_meta.get("ownerReferences", []), want_meta["ownerReferences"])
        ops.append({"op": "add", "path": "/metadata/ownerReferences", "value": owners})
    if "spec" in desired and not isinstance(existing.get("spec"), Mapping):
        ops.append({"op": "add", "path": "/spec", "value": desired["spec"]})
    recorded = recorded_field_hashes(existing)
    for path, value in owned_fields(desired).items():
        if path.startswith("/spec/") and not isinstance(existing.get("spec"), Mapping):
            continue  # The whole spec is added above.
        if recorded.get(path) == _digest(value) and contains(_at(existing, path), value):
            continue  # Applied as wanted and not edited since: left out of the patch.
        ops.append({"op": "add", "path": path, "value": value})
    return ops


_ABSENT = object()


def _at(obj: Mapping[str, Any], pointer: str) -> Any:
    """The value at a JSON pointer of `owned_fields` (one or two segments), or a marker
    that no `contains` check accepts."""
    value: Any = obj
    for segment in pointer.lstrip("/").split("/"):
        key = segment.replace("~1", "/").replace("~0", "~")
        if not isinstance(value, Mapping) or key not in value:
            return _ABSENT
        value = value[key]
    return value


def _merged_owners(have: list[Obj], want: list[Obj]) -> list[Obj]:
    """Ours first, then others' references that are not controllers (only one may be)."""
    ours = {ref.get("uid") for ref in want}
    kept = [ref for ref in have if ref.get("uid") not in ours and not ref.get("controller")]
    return [*want, *kept]


def _pointer(key: str) -> str:
    """A key as one JSON-pointer segment (RFC 6901 escapes)."""
    return key.replace("~", "~0").replace("/", "~1")


class Kube:
    """Create, read, patch and delete the operator's objects through one ApiClient."""

    def __init__(self, api_client: ApiClient, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._api = api_client
        self._timeout_s = timeout_s

    @classmethod
    def from_environment(cls, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Kube:
        """In a pod, its service account; elsewhere the kubeconfig (`KUBECONFIG`, or the
        client's default location, which tests point at their mock server)."""
        configuration = Configuration()
        try:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException:
            load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(ApiClient(configuration), timeout_s=timeout_s)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        """One API call; the decoded JSON answer. Raises ApiException on a non-2xx status."""
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        serialized = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(*serialized, _request_timeout=self._timeout_s)
        data: bytes | None = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            text = data.decode("utf-8", errors="replace") if data else None
            raise ApiException(status=response.status, reason=response.reason, body=text)
        return json.loads(data) if data else None

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            found: Obj = self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Obj]:
        """The objects of a kind in a namespace that match a label selector."""
        path = resource_path(api_version, kind, namespace)
        answer = self.request("GET", path, query=[("labelSelector", selector)])
        items: list[Obj] = answer.get("items") or []
        return items

    def apply(self, obj: Mapping[str, Any]) -> Action:
        """Create `obj`, or patch the existing object into it (see the module doc)."""
        desired = stamped(obj)
        api_version, kind = desired["apiVersion"], desired["kind"]
        namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        existing = self.get(api_version, kind, namespace, name)
        if existing is None:
            try:
                self.request("POST", resource_path(api_version, kind, namespace), body=desired)
                return "created"
            except ApiException as exc:
                if exc.status != 409:
                    raise
            # Created by someone else since the read: patch that one instead.
            existing = self.get(api_version, kind, namespace, name) or {}
        ops = patch_ops(existing, desired)
        if not ops:
            return "unchanged"
        path = resource_path(api_version, kind, namespace, name)
        self.request("PATCH", path, body=ops, content_type="application/json-patch+json")
        return "patched"

    def delete_owned(
        self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str
    ) -> bool:
        """Delete the object if it exists and `owner_uid` controls it; whether it was.

        An object of the same name that the DistCluster does not own is never touched."""
        existing = self.get(api_version, kind, namespace, name)
        if existing is None or not is_controlled_by(existing, owner_uid):
            return False
        path = resource_path(api_version, kind, namespace, name)
        try:
            self.request("DELETE", path, query=[("propagationPolicy", "Background")])
        except ApiException as exc:
            if exc.status != 404:
                raise
            return False
        return True

    def patch_cr_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge `status` into a DistCluster's status subresource (a null removes a field)."""
        path = resource_path(crd.API_VERSION, crd.KIND, namespace, name, "status")
        body = {"status": dict(status)}
        self.request("PATCH", path, body=body, content_type="application/merge-patch+json")


def is_controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    """Whether `obj` has a controller owner reference to the object with `owner_uid`."""
    references = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in references)
