//! Lambda's error shape at the API edge: `x-amzn-ErrorType`, `x-amzn-RequestId` and a JSON body
//! `{"Type":"User","message":...}` (or `Message`, as each exception's model names it).

use serde_json::json;

use super::http::Response;

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
    /// `TooManyRequestsException`'s `Reason`.
    pub reason: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, error_type: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error_type,
            message: message.into(),
            reason: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "InvalidParameterValueException", message)
    }

    /// `1 validation error detected: Value '<v>' at '<field>' failed to satisfy constraint: <c>`.
    pub fn validation(value: &str, field: &str, constraint: &str) -> ApiError {
        ApiError::new(
            400,
            "ValidationException",
            format!("1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"),
        )
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "ResourceNotFoundException", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, "ResourceConflictException", message)
    }

    pub fn service(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "ServiceException", message)
    }

    pub fn response(&self, request_id: &str) -> Response {
        // ValidationException bodies carry only `message`; every other client error also has Type.
        let kind = if self.status >= 500 {
            "Service"
        } else {
            "User"
        };
        let mut body = if self.error_type == "ValidationException" {
            json!({ "message": self.message })
        } else {
            json!({ "Type": kind, "message": self.message })
        };
        if let Some(r) = self.reason {
            body["Reason"] = json!(r);
        }
        Response::json(self.status, body.to_string().into_bytes())
            .header("x-amzn-ErrorType", self.error_type)
            .header("x-amzn-RequestId", request_id)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
