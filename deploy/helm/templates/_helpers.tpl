{{/* Names, labels and the derived settings shared by every template. */}}

{{- define "llm-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llm-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "llm-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llm-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "llm-gateway.labels" -}}
helm.sh/chart: {{ include "llm-gateway.chart" . }}
{{ include "llm-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "llm-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "llm-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "llm-gateway.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap holding the provider table: the chart's own, or the operator's. */}}
{{- define "llm-gateway.providersConfigMap" -}}
{{- default (printf "%s-providers" (include "llm-gateway.fullname" .)) .Values.providers.existingConfigMap -}}
{{- end -}}

{{- define "llm-gateway.providersKey" -}}
{{- if .Values.providers.existingConfigMap -}}{{ .Values.providers.existingConfigMapKey }}{{- else -}}providers.yaml{{- end -}}
{{- end -}}

{{/* The provider table as YAML: the inline `providers.table`, else the table bundled with the chart. */}}
{{- define "llm-gateway.providersYaml" -}}
{{- if .Values.providers.table -}}
{{- toYaml .Values.providers.table -}}
{{- else -}}
{{- .Files.Get "files/providers.yaml" -}}
{{- end -}}
{{- end -}}

{{- define "llm-gateway.settingsConfigMap" -}}
{{- printf "%s-settings" (include "llm-gateway.fullname" .) -}}
{{- end -}}

{{/* The Secret whose entries become env vars (provider keys): an existing one unless the chart makes it. */}}
{{- define "llm-gateway.keysSecret" -}}
{{- default (printf "%s-provider-keys" (include "llm-gateway.fullname" .)) .Values.providerKeys.existingSecret -}}
{{- end -}}

{{- define "llm-gateway.scheme" -}}
{{- if .Values.tls.existingSecret -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{- define "llm-gateway.sidecar" -}}
{{- if eq .Values.mode "sidecar" -}}true{{- end -}}
{{- end -}}

{{/* A value as an env string: whole numbers without the float exponent Helm's JSON numbers would print. */}}
{{- define "llm-gateway.envString" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- if eq (float64 .) (float64 (int64 .)) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* The keys file's path in the pod, when a keys Secret is given (else empty: no keys file). */}}
{{- define "llm-gateway.authKeysFile" -}}
{{- with .Values.auth.keys -}}
{{- if .existingSecret -}}{{ printf "%s/%s" (trimSuffix "/" .mountPath) .existingSecretKey }}{{- end -}}
{{- end -}}
{{- end -}}

{{/* (list url default): the port in the URL's authority, else the default. */}}
{{- define "llm-gateway.urlPort" -}}
{{- $authority := regexFind "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*" (index . 0) -}}
{{- default (index . 1) (regexFind "[0-9]+$" (regexFind ":[0-9]+$" $authority)) -}}
{{- end -}}

{{/* The TCP port the gateway reaches Redis on, for the NetworkPolicy; empty without Redis or over a unix socket. */}}
{{- define "llm-gateway.redisPort" -}}
{{- with .Values.rateLimit.redis -}}
{{- if .url -}}
{{- if not (hasPrefix "unix:" .url) -}}
{{- include "llm-gateway.urlPort" (list .url "6379") -}}
{{- end -}}
{{- else if .existingSecret -}}
{{- include "llm-gateway.envString" .port -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The HTTPS port of the OIDC issuer, for the NetworkPolicy; empty without an https issuer. */}}
{{- define "llm-gateway.oidcPort" -}}
{{- $issuer := .Values.auth.oidc.issuer -}}
{{- if hasPrefix "https://" $issuer -}}
{{- include "llm-gateway.urlPort" (list $issuer "443") -}}
{{- end -}}
{{- end -}}

{{/*
Settings the chart owns, with the value to use instead; `config` may not set them. The aliases the gateway also
reads (TELEMETRY_ENABLED, AUTH_ENABLED) are owned too: set beside the chart's spelling they would disagree.
*/}}
{{- define "llm-gateway.chartOwned" -}}
SERVER_HOST: server.host
SERVER_PORT: server.port
PROVIDERS_FILE: providers.mountPath
SERVER_TLS_CERT_PATH: tls.existingSecret
SERVER_TLS_KEY_PATH: tls.existingSecret
SERVER_DRAIN_TIMEOUT: shutdown.drainTimeoutSeconds
SERVER_SHUTDOWN_DELAY: shutdown.delaySeconds
TELEMETRY_ENABLE: metrics.enabled
TELEMETRY_ENABLED: metrics.enabled
TELEMETRY_METRICS_PORT: metrics.port
AUTH_ENABLE: auth.enabled
AUTH_ENABLED: auth.enabled
AUTH_KEYS_FILE: auth.keys.existingSecret
AUTH_KEYS_RELOAD_INTERVAL: auth.keys.reloadInterval
AUTH_OIDC_ISSUER: auth.oidc.issuer
AUTH_OIDC_CLIENT_ID: auth.oidc.clientId
AUTH_OIDC_POLICY_CLAIM: auth.oidc.policyClaim
AUTH_OIDC_NAME_CLAIM: auth.oidc.nameClaim
AUTH_OIDC_LEEWAY: auth.oidc.leeway
REDIS_URL: rateLimit.redis.url, or rateLimit.redis.existingSecret for a URL with a password
RATELIMIT_REDIS_FAILURE: rateLimit.redis.failure
RATELIMIT_RESERVE_OUTPUT_TOKENS: rateLimit.reserveOutputTokens
REDIS_TIMEOUT: rateLimit.redis.timeout
REDIS_RETRY_INTERVAL: rateLimit.redis.retryInterval
USAGE_STORE: usage.store (usage.sqlite, or usage.postgresql.existingSecret)
USAGE_RETENTION: usage.retention
USAGE_API_ENABLE: usage.apiEnabled
USAGE_STORE_BODIES: usage.storeBodies
EXPOSE_MCP: config.MCP_EXPOSE
{{- end -}}

{{/*
The gateway's environment, minus secrets, as a YAML map: what the chart derives from its own values (listen
address, ports, mounted paths, telemetry, shutdown, access control) plus `config`. A key in `config` that the
chart owns, or that looks like a credential, is refused rather than silently shadowed or stored in a ConfigMap.
*/}}
{{- define "llm-gateway.settings" -}}
{{- $sidecar := eq .Values.mode "sidecar" -}}
{{- $derived := dict
  "SERVER_HOST" (ternary "127.0.0.1" .Values.server.host $sidecar)
  "SERVER_PORT" (include "llm-gateway.envString" .Values.server.port)
  "PROVIDERS_FILE" (printf "%s/%s" .Values.providers.mountPath (include "llm-gateway.providersKey" .))
  "SERVER_DRAIN_TIMEOUT" (printf "%ss" (include "llm-gateway.envString" .Values.shutdown.drainTimeoutSeconds))
  "SERVER_SHUTDOWN_DELAY" (printf "%ss" (include "llm-gateway.envString" (ternary 0 .Values.shutdown.delaySeconds $sidecar)))
  "TELEMETRY_ENABLE" (ternary "true" "false" (.Values.metrics.enabled | default false))
  "TELEMETRY_METRICS_PORT" (include "llm-gateway.envString" .Values.metrics.port)
  "AUTH_ENABLE" (ternary "true" "false" (.Values.auth.enabled | default false))
  "AUTH_KEYS_FILE" (include "llm-gateway.authKeysFile" .)
  "AUTH_KEYS_RELOAD_INTERVAL" (include "llm-gateway.envString" .Values.auth.keys.reloadInterval)
  "AUTH_OIDC_ISSUER" (.Values.auth.oidc.issuer | toString)
  "AUTH_OIDC_CLIENT_ID" (.Values.auth.oidc.clientId | toString)
  "AUTH_OIDC_POLICY_CLAIM" (.Values.auth.oidc.policyClaim | toString)
  "AUTH_OIDC_NAME_CLAIM" (.Values.auth.oidc.nameClaim | toString)
  "AUTH_OIDC_LEEWAY" (include "llm-gateway.envString" .Values.auth.oidc.leeway)
  "RATELIMIT_REDIS_FAILURE" (.Values.rateLimit.redis.failure | toString)
  "RATELIMIT_RESERVE_OUTPUT_TOKENS" (include "llm-gateway.envString" .Values.rateLimit.reserveOutputTokens)
  "REDIS_TIMEOUT" (include "llm-gateway.envString" .Values.rateLimit.redis.timeout)
  "REDIS_RETRY_INTERVAL" (include "llm-gateway.envString" .Values.rateLimit.redis.retryInterval)
-}}
{{- if .Values.tls.existingSecret -}}
{{- $_ := set $derived "SERVER_TLS_CERT_PATH" (printf "%s/tls.crt" .Values.tls.mountPath) -}}
{{- $_ := set $derived "SERVER_TLS_KEY_PATH" (printf "%s/tls.key" .Values.tls.mountPath) -}}
{{- end -}}
{{- /* The usage store: a SQLite file on the chart's volume here; a PostgreSQL URL only by secretKeyRef. */ -}}
{{- with .Values.usage -}}
{{- $_ := set $derived "USAGE_RETENTION" (include "llm-gateway.envString" .retention) -}}
{{- $_ := set $derived "USAGE_API_ENABLE" (ternary "true" "false" (.apiEnabled | default false)) -}}
{{- $_ := set $derived "USAGE_STORE_BODIES" (ternary "true" "false" (.storeBodies | default false)) -}}
{{- if eq .store "sqlite" -}}
{{- $_ := set $derived "USAGE_STORE" (printf "%s/usage.db" .sqlite.mountPath) -}}
{{- else if eq .store "off" -}}
{{- $_ := set $derived "USAGE_STORE" "off" -}}
{{- end -}}
{{- end -}}
{{- /* Only a URL without credentials (checked in llm-gateway.validate); one from a Secret is a secretKeyRef. */ -}}
{{- with .Values.rateLimit.redis.url -}}
{{- $_ := set $derived "REDIS_URL" . -}}
{{- end -}}
{{- $owned := include "llm-gateway.chartOwned" . | fromYaml -}}
{{- $settings := dict -}}
{{- range $name, $value := .Values.config -}}
{{- if not (regexMatch "^[A-Z_][A-Z0-9_]*$" $name) -}}
{{- fail (printf "config.%s: not an environment variable name (A-Z, 0-9, _)" $name) -}}
{{- end -}}
{{- if hasKey $owned $name -}}
{{- fail (printf "config.%s is set by the chart: use %s (see the chart README, 'Derived settings')" $name (get $owned $name)) -}}
{{- end -}}
{{- if regexMatch "(_API_KEY|SECRET|PASSWORD|TOKEN)" $name -}}
{{- fail (printf "config.%s looks like a credential: put it in the providerKeys Secret or extraEnv with a secretKeyRef, never in a ConfigMap" $name) -}}
{{- end -}}
{{- if not (kindIs "invalid" $value) -}}
{{- $_ := set $settings $name (include "llm-gateway.envString" $value) -}}
{{- end -}}
{{- end -}}
{{- toYaml (merge $derived $settings) -}}
{{- end -}}

{{/* Refuse value combinations that would break at run time. */}}
{{- define "llm-gateway.validate" -}}
{{- if not (has .Values.mode (list "service" "sidecar")) -}}
{{- fail (printf "mode must be service or sidecar, not %q" .Values.mode) -}}
{{- end -}}
{{- if not (has .Values.reload.mode (list "restart" "inPlace")) -}}
{{- fail (printf "reload.mode must be restart or inPlace, not %q" .Values.reload.mode) -}}
{{- end -}}
{{- if ge (float64 .Values.shutdown.delaySeconds) (float64 .Values.shutdown.drainTimeoutSeconds) -}}
{{- fail "shutdown.delaySeconds must be below shutdown.drainTimeoutSeconds (the delay is part of the drain)" -}}
{{- end -}}
{{- if ge (float64 .Values.shutdown.drainTimeoutSeconds) (float64 .Values.terminationGracePeriodSeconds) -}}
{{- fail "shutdown.drainTimeoutSeconds must be below terminationGracePeriodSeconds, or the kubelet kills the gateway mid-drain" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled (the gateway serves /metrics only then)" -}}
{{- end -}}
{{- if and .Values.metrics.scrapeAnnotations (not .Values.metrics.enabled) -}}
{{- fail "metrics.scrapeAnnotations needs metrics.enabled" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.targetMemoryUtilizationPercentage)) -}}
{{- fail "autoscaling.enabled needs a CPU or memory utilization target" -}}
{{- end -}}
{{- if and .Values.providerKeys.create .Values.providerKeys.existingSecret -}}
{{- fail "set either providerKeys.create or providerKeys.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.providers.existingConfigMap .Values.providers.table -}}
{{- fail "set either providers.existingConfigMap or providers.table, not both" -}}
{{- end -}}
{{- with .Values.auth -}}
{{- if and .enabled (not (or .keys.existingSecret .oidc.issuer)) -}}
{{- fail "auth.enabled needs auth.keys.existingSecret or auth.oidc.issuer (or both): nobody could sign in" -}}
{{- end -}}
{{- if and .oidc.issuer (not .oidc.clientId) -}}
{{- fail "auth.oidc.issuer needs auth.oidc.clientId (the audience tokens must carry)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.auth.keys.existingSecret (eq .Values.mode "service") (not .Values.podSecurityContext.fsGroup) -}}
{{- fail "auth.keys.existingSecret needs podSecurityContext.fsGroup: the keys file is mounted with mode 0440, readable through the group only" -}}
{{- end -}}
{{- with .Values.usage -}}
{{- if and (eq .store "postgresql") (not .postgresql.existingSecret) -}}
{{- fail "usage.store postgresql needs usage.postgresql.existingSecret: a Secret holding the postgresql:// URL (it holds a password, so never a value of the chart)" -}}
{{- end -}}
{{- if and (eq .store "sqlite") (eq $.Values.mode "service") (or $.Values.autoscaling.enabled (gt (int $.Values.replicaCount) 1)) -}}
{{- fail "usage.store sqlite keeps the rows in one pod's file: set replicaCount: 1 (no autoscaling), or use usage.store postgresql for several replicas" -}}
{{- end -}}
{{- if and (eq .store "sqlite") .sqlite.existingClaim (ne $.Values.strategy.type "Recreate") -}}
{{- fail "usage.sqlite.existingClaim needs strategy.type: Recreate: a rolling update would start a second pod on the same ReadWriteOnce claim" -}}
{{- end -}}
{{- end -}}
{{- with .Values.rateLimit.redis -}}
{{- if and .url .existingSecret -}}
{{- fail "set either rateLimit.redis.url or rateLimit.redis.existingSecret, not both" -}}
{{- end -}}
{{- /* A user, a password (user:pass@ or ?password=) would end up in a ConfigMap, readable by far more people. */ -}}
{{- if or (regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@" .url) (regexMatch "(?i)[?&](password|username)=" .url) -}}
{{- fail "rateLimit.redis.url holds credentials and would be stored in a ConfigMap: put the whole URL in a Secret and set rateLimit.redis.existingSecret (and existingSecretKey) instead" -}}
{{- end -}}
{{- end -}}
{{- end -}}
