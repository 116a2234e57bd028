//! The incoming side: turns a `wasi:http` request into a [`Request`], runs the handler and
//! writes its [`Response`] back. `function!` expands to a call of [`serve`].

use http::StatusCode;

use crate::bindings::wasi::http::types::{IncomingRequest, OutgoingResponse, ResponseOutparam};
use crate::config_bindings::exports::fnhost::function::config as wit;
use crate::{IntoResponse, Request, Response, Settings, body, convert};

/// Runs `handler` for one incoming request, sends its response, then runs the work a
/// [`crate::WaitUntil`] carries.
///
/// A request whose body cannot be read is answered `400` without calling the handler.
pub fn serve<R: IntoResponse>(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> R,
) {
    let (response, after) = match read_request(request) {
        Ok(request) => handler(request).into_response_then(),
        Err(message) => ((StatusCode::BAD_REQUEST, message).into_response(), None),
    };
    send_response(out, response);
    // The response is complete (body finished): the client has it while this runs.
    if let Some(work) = after {
        work();
    }
}

/// The `describe` export: the function's declared settings, as the WIT record.
pub fn describe(config: impl FnOnce() -> Settings) -> wit::Settings {
    config().into()
}

fn read_request(request: IncomingRequest) -> Result<Request, String> {
    let uri = convert::uri_from_parts(
        request.scheme().as_ref().map(convert::scheme_from_wasi),
        request.authority().as_deref(),
        request.path_with_query().as_deref(),
    );
    let method = convert::method_from_wasi(&request.method());
    let headers = convert::headers_from_fields(&request.headers());
    let body = request
        .consume()
        .map_err(|()| "request body unavailable".to_owned())?;
    let bytes =
        body::read_all(body).map_err(|err| format!("failed to read request body: {err}"))?;

    let mut req = Request::new(bytes);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Sets the response (so the host can start sending it), then streams the body.
fn send_response(out: ResponseOutparam, response: Response) {
    let (parts, bytes) = response.into_parts();
    let outgoing = OutgoingResponse::new(convert::fields_from_headers(&parts.headers));
    // Every `http::StatusCode` (100..=999) is a u16; the host rejects only invalid ones.
    if outgoing.set_status_code(parts.status.as_u16()).is_err() {
        let _ = outgoing.set_status_code(StatusCode::INTERNAL_SERVER_ERROR.as_u16());
    }
    let body = outgoing
        .body()
        .expect("a new outgoing-response's body is available");
    ResponseOutparam::set(out, Ok(outgoing));
    // The client may be gone; there is nobody left to tell, so a failed write ends here.
    let _ = body::write_all(body, &bytes);
}
