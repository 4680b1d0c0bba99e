//! The OpenAPI description of the HTTP API, served at `/v1/openapi.json`.
//! A test walks every operation listed here against a live server, so the
//! document and the handlers cannot drift apart unnoticed.

use serde_json::{Value, json};

/// The document.
pub fn document() -> Value {
    let error = json!({ "$ref": "#/components/responses/Error" });
    let job = json!({ "description": "the job", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } });
    let id =
        json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Helix Build",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Build jobs run by sandboxed WebAssembly builders. When the server has a token, every /v1 route needs `Authorization: Bearer <token>`."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": {
                    "description": "what went wrong",
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "properties": { "error": { "type": "object", "properties": {
                            "code": { "type": "string" }, "message": { "type": "string" } } } }
                    } } }
                }
            },
            "schemas": {
                "JobRequest": {
                    "type": "object", "required": ["repo_url"], "additionalProperties": false,
                    "properties": {
                        "id": { "type": "string" }, "repo_url": { "type": "string" }, "ref": { "type": "string" },
                        "dockerfile_path": { "type": "string" },
                        "build_args": { "type": "object", "additionalProperties": { "type": "string" } },
                        "platforms": { "type": "array", "items": { "type": "string" } },
                        "builder": { "type": "string" }, "image": { "type": "string" },
                        "context": { "type": "string", "description": "directory of the checkout to build; dockerfile_path is relative to it" },
                        "target": { "type": "string" },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                        "no_cache": { "type": "boolean" },
                        "secrets": { "type": "array", "items": { "type": "string" }, "description": "names of build secrets the operator defined" }
                    }
                },
                "Job": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" }, "repo_url": { "type": "string" }, "ref": { "type": "string" },
                        "dockerfile_path": { "type": "string" },
                        "build_args": { "type": "object", "additionalProperties": { "type": "string" } },
                        "platforms": { "type": "array", "items": { "type": "string" } },
                        "builder": { "type": "string" }, "image": { "type": "string", "nullable": true },
                        "context": { "type": "string" },
                        "target": { "type": "string", "nullable": true },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                        "no_cache": { "type": "boolean" },
                        "secrets": { "type": "array", "items": { "type": "string" } },
                        "state": { "type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled", "timed_out"] },
                        "image_tag": { "type": "string", "nullable": true },
                        "digest": { "type": "string", "nullable": true },
                        "manifest": { "type": "object", "additionalProperties": { "type": "string" } },
                        "error": { "type": "string", "nullable": true },
                        "created_at": { "type": "string", "format": "date-time" },
                        "started_at": { "type": "string", "format": "date-time", "nullable": true },
                        "completed_at": { "type": "string", "format": "date-time", "nullable": true },
                        "attempts": { "type": "integer" },
                        "steps": { "type": "object", "description": "build steps of the last run and how many came from the layer cache", "properties": { "total": { "type": "integer" }, "cached": { "type": "integer" } } }
                    }
                },
                "JobPage": {
                    "type": "object",
                    "properties": {
                        "jobs": { "type": "array", "items": { "$ref": "#/components/schemas/Job" } },
                        "next_cursor": { "type": "string", "nullable": true }
                    }
                }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/healthz": { "get": { "summary": "liveness", "security": [], "responses": { "200": { "description": "ok" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "security": [], "responses": { "200": { "description": "text exposition format" }, "503": error } } },
            "/v1/openapi.json": { "get": { "summary": "this document", "responses": { "200": { "description": "OpenAPI 3" } } } },
            "/v1/jobs": {
                "post": {
                    "summary": "submit a job",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/JobRequest" } } } },
                    "responses": { "201": job, "400": error, "401": error, "409": error, "413": error, "503": error }
                },
                "get": {
                    "summary": "list jobs, newest first",
                    "parameters": [
                        { "name": "state", "in": "query", "schema": { "type": "string" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } },
                        { "name": "cursor", "in": "query", "schema": { "type": "string" } }
                    ],
                    "responses": { "200": { "description": "a page", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/JobPage" } } } }, "400": error, "401": error, "503": error }
                }
            },
            "/v1/jobs/{id}": { "get": { "summary": "one job", "parameters": [id], "responses": { "200": job, "401": error, "404": error, "503": error } } },
            "/v1/jobs/{id}/cancel": { "post": { "summary": "cancel a queued or running job", "parameters": [id], "responses": { "200": job, "401": error, "404": error, "409": error, "503": error } } },
            "/v1/jobs/{id}/wait": { "get": {
                "summary": "the job once it ends, or as it is at the timeout",
                "parameters": [id, { "name": "timeout_secs", "in": "query", "schema": { "type": "integer" } }],
                "responses": { "200": job, "401": error, "404": error, "503": error } } },
            "/v1/jobs/{id}/logs": { "get": {
                "summary": "the job's log; with follow=true, server-sent `state` and `log` events, then one `end` event with the job; with timestamps=true, each line starts with its time (RFC 3339, UTC) and a space",
                "parameters": [id, { "name": "follow", "in": "query", "schema": { "type": "boolean" } }, { "name": "timestamps", "in": "query", "schema": { "type": "boolean" } }],
                "responses": { "200": { "description": "text/plain, or text/event-stream when following" }, "401": error, "404": error, "503": error } } },
            "/v1/builders": { "get": { "summary": "loaded builders: info, grants, limits, component digest, platforms they can build here", "responses": { "200": { "description": "builders" }, "401": error } } }
        }
    })
}
