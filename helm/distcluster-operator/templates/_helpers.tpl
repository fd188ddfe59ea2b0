{{/*
Names, labels and checks shared by the chart's templates.
*/}}

{{/*
The chart's name, or nameOverride. Cut to 63 characters because it is the value of the
app.kubernetes.io/name label, and Kubernetes rejects label values longer than 63.
*/}}
{{- define "distcluster-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the release's objects: fullnameOverride, else "<release>-<chart>", or the release
name alone when it already contains the chart name (release "distcluster-operator" gives
the names of manifests/).
Cut to 63 characters because several Kubernetes names are DNS labels (RFC 1123), limited
to 63: a pod's hostname is derived from its Deployment's name, and names are also used as
label values, limited to 63 as well. A cut can end on "-", which a DNS label may not end
with, hence the trimSuffix.
*/}}
{{- define "distcluster-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The helm.sh/chart label: chart name and version. "+" (semver build metadata) is not
allowed in a label value, and the value is cut to the 63 characters a label value may have.
*/}}
{{- define "distcluster-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object the chart creates. Each template adds app.kubernetes.io/component.
*/}}
{{- define "distcluster-operator.labels" -}}
helm.sh/chart: {{ include "distcluster-operator.chart" . }}
{{ include "distcluster-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: distcluster-operator
{{- end }}

{{/*
Labels that identify the release's objects and never change between versions: a
Deployment's selector is immutable, so it must not hold the version or chart labels.
*/}}
{{- define "distcluster-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "distcluster-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the operator pods: podLabels, overridden by the selector labels and the
component, so that a podLabels entry can never make the Deployment lose its own pods.
*/}}
{{- define "distcluster-operator.podLabels" -}}
{{- $fixed := include "distcluster-operator.selectorLabels" . | fromYaml }}
{{- $_ := set $fixed "app.kubernetes.io/component" "operator" }}
{{- $_ = set $fixed "app.kubernetes.io/part-of" "distcluster-operator" }}
{{- toYaml (merge $fixed (deepCopy .Values.podLabels)) }}
{{- end }}

{{/*
The ServiceAccount the operator runs as: the created one (named after the release unless
serviceAccount.name is set), or the existing serviceAccount.name.
*/}}
{{- define "distcluster-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "distcluster-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: repository:tag (tag defaulting to appVersion), then @digest if set.
*/}}
{{- define "distcluster-operator.image" -}}
{{- $image := printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- if .Values.image.digest }}
{{- $image = printf "%s@%s" $image .Values.image.digest }}
{{- end }}
{{- $image }}
{{- end }}

{{/*
Name of the sample DistCluster: sample.name, else the name of the repository's sample for
the role (manifests/samples/).
*/}}
{{- define "distcluster-operator.sampleName" -}}
{{- $byRole := dict "lock_manager" "locks" "queue" "queue" "cache" "cache" }}
{{- default (get $byRole .Values.sample.role) .Values.sample.name }}
{{- end }}

{{/*
Combinations of values that would deploy a broken operator. values.schema.json refuses
them already; these checks hold when schema validation is skipped
(--skip-schema-validation). Included by deployment.yaml; renders nothing.
*/}}
{{- define "distcluster-operator.validate" -}}
{{- $watch := .Values.watch }}
{{- if and $watch.allNamespaces $watch.namespaces }}
{{- fail "watch.namespaces requires watch.allNamespaces: false" }}
{{- end }}
{{- if not (or $watch.allNamespaces $watch.namespaces) }}
{{- fail "watch.allNamespaces is false: list at least one namespace in watch.namespaces" }}
{{- end }}
{{- if and .Values.peering.name .Values.peering.standalone }}
{{- fail "peering.name and peering.standalone exclude each other" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.name) }}
{{- fail "replicaCount above 1 requires peering.name: without peering, every replica would reconcile the same resources" }}
{{- end }}
{{- if and .Values.sample.enabled (not $watch.allNamespaces) (not (has .Release.Namespace $watch.namespaces)) }}
{{- fail (printf "sample.enabled: the sample lives in the release namespace %q, which watch.namespaces does not list" .Release.Namespace) }}
{{- end }}
{{- end }}
