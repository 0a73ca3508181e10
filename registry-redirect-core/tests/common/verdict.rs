//! The rule every hostile request must meet, checked on a decision and on
//! every response it can become: a 400, 404 or 405 with an OCI error body, the
//! 200 of the API version check, "not a registry request", or a redirect
//! whose `Location` is an upstream's URL for the same repository. Never a
//! 5xx, a header value that is not visible ASCII, or a `Location` elsewhere.
//!
//! Shared by the core's corpus test and the fuzz targets, which include
//! this file with `#[path]` beside `location.rs` and `origin.rs`.

// Each test crate that includes this file uses a different part of it.
#![allow(dead_code)]

use http::header::{ALLOW, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};
use registry_redirect_core::path::{classify, RegistryPath};
use registry_redirect_core::{Decision, Outcome, Policy};

use super::corpus::oci_error_code;
use super::location::LocationOracle;
use super::origin::{check_origin, origins, Origin};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// `http::Uri` rejected the target, so hyper answers 400 itself.
    UriRejected,
    /// Outside `/v2`: the core leaves it to the application.
    NotRegistry,
    /// 400 (a `Host` or authority that is not a host and port, or an HTTP/2
    /// `Host` that differs from `:authority`), 404 or 405,
    /// with an OCI error body.
    Rejected,
    /// 200 for the API version check.
    Answered,
    /// A redirect to an upstream.
    Redirected,
}

/// Checks decisions made under one policy.
pub struct Judge {
    oracle: LocationOracle,
    origins: Vec<Origin>,
    redirect_status: StatusCode,
}

impl Judge {
    /// Prepares the checks for decisions under `policy`.
    pub fn new(policy: &Policy) -> Self {
        let oracle = LocationOracle::new(policy);
        let origins = origins(oracle.bases().iter().map(|base| base.text.as_str()));
        Judge {
            oracle,
            origins,
            redirect_status: policy.redirect_status(),
        }
    }

    /// Checks a decision on a request with this path and query, and the
    /// response for each of its candidates.
    pub fn judge(
        &self,
        decision: &Decision<'_>,
        path: &str,
        query: Option<&str>,
    ) -> Result<Verdict, String> {
        let explain = |error: String| format!("{error}\n{decision}");
        let verdict = self.judge_outcome(decision, path, query).map_err(explain)?;
        if verdict == Verdict::NotRegistry {
            return Ok(verdict);
        }
        let candidates = decision.candidates().len().max(1);
        for index in 0..candidates {
            let response = decision
                .clone()
                .into_response_for_candidate(index)
                .ok_or_else(|| explain("a /v2 request got no response".to_owned()))?;
            self.check_response(&response, verdict, decision.is_head)
                .map_err(explain)?;
        }
        Ok(verdict)
    }

    fn judge_outcome(
        &self,
        decision: &Decision<'_>,
        path: &str,
        query: Option<&str>,
    ) -> Result<Verdict, String> {
        let registry_path = classify(path);
        match &decision.outcome {
            Outcome::NotRegistry => {
                if registry_path != Ok(RegistryPath::NotRegistry) {
                    return Err(format!(
                        "not a registry request, but classify returns {registry_path:?}"
                    ));
                }
                if decision.clone().into_response().is_some() {
                    return Err("a request outside /v2 got a response".to_owned());
                }
                Ok(Verdict::NotRegistry)
            }
            Outcome::Reject(rejection) => {
                let allowed = [
                    StatusCode::BAD_REQUEST,
                    StatusCode::NOT_FOUND,
                    StatusCode::METHOD_NOT_ALLOWED,
                ];
                if !allowed.contains(&rejection.status) {
                    return Err(format!("rejected with {}", rejection.status));
                }
                Ok(Verdict::Rejected)
            }
            Outcome::AnswerApiVersion { .. } => {
                if registry_path != Ok(RegistryPath::ApiVersionCheck) {
                    return Err(format!("answered 200 for {registry_path:?}"));
                }
                Ok(Verdict::Answered)
            }
            Outcome::Redirect { location, .. } => {
                let registry_path = registry_path
                    .map_err(|error| format!("redirected a path that classify rejects: {error}"))?;
                self.check_location(location, &registry_path, query)?;
                Ok(Verdict::Redirected)
            }
            Outcome::Candidates { candidates, .. } => {
                let registry_path = registry_path
                    .map_err(|error| format!("redirected a path that classify rejects: {error}"))?;
                if candidates.is_empty() {
                    return Err("candidates without a single candidate".to_owned());
                }
                for candidate in candidates {
                    self.check_location(&candidate.location, &registry_path, query)?;
                }
                Ok(Verdict::Redirected)
            }
            other => Err(format!("unexpected outcome {other:?}")),
        }
    }

    fn check_location(
        &self,
        location: &str,
        path: &RegistryPath<'_>,
        query: Option<&str>,
    ) -> Result<(), String> {
        self.oracle.check(location, path, query)?;
        check_origin(location, &self.origins)
    }

    /// Checks a response: status, header values, and the headers and body
    /// that go with the verdict.
    pub fn check_response(
        &self,
        response: &Response<String>,
        verdict: Verdict,
        is_head: bool,
    ) -> Result<(), String> {
        let status = response.status();
        if status.is_server_error() {
            return Err(format!("server error {status}: {}", response.body()));
        }
        for (name, value) in response.headers() {
            if value.to_str().is_err() {
                return Err(format!("header {name} is not visible ASCII: {value:?}"));
            }
        }
        if response
            .headers()
            .get("docker-distribution-api-version")
            .is_none()
        {
            return Err("no Docker-Distribution-Api-Version header".to_owned());
        }
        if is_head && !response.body().is_empty() {
            return Err("a HEAD response has a body".to_owned());
        }
        match verdict {
            Verdict::Redirected => {
                if status != self.redirect_status {
                    return Err(format!(
                        "redirect status {status}, policy says {}",
                        self.redirect_status
                    ));
                }
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or("a redirect without a Location")?;
                check_origin(location, &self.origins)?;
            }
            Verdict::Rejected => {
                let content_type = response.headers().get(CONTENT_TYPE);
                if content_type.map(|value| value.as_bytes()) != Some(b"application/json") {
                    return Err(format!(
                        "rejection with Content-Type {content_type:?}, not application/json"
                    ));
                }
                if status == StatusCode::METHOD_NOT_ALLOWED
                    && response.headers().get(ALLOW).is_none()
                {
                    return Err("405 without Allow".to_owned());
                }
                if !is_head {
                    oci_error_code(response.body().as_bytes())?;
                }
            }
            Verdict::Answered => {
                if status != StatusCode::OK {
                    return Err(format!("the API version check got {status}"));
                }
            }
            Verdict::UriRejected | Verdict::NotRegistry => {}
        }
        Ok(())
    }
}
