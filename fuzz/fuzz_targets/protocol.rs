//! The control protocol's decoder (`herder::protocol::read_frame`: the length prefix, the
//! 16 MiB limit, the JSON of each frame) on arbitrary bytes from a connection, read the way
//! each side reads them; the first byte says which. Even: the daemon's side, a `Hello` and then
//! `Request`s until the stream fails or ends, each of which must read back the same from the
//! frame a client writes for it. Odd: the client's side, a `HelloReply` and then `Response`s
//! (not held to that: a float too large for an `f32` reads as infinity, which JSON writes as
//! `null`, and no daemon sends one). Errors, never panics.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use herder::protocol::{encode_frame, read_frame, FrameError, Hello, HelloReply, Request, Response};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The next frame of `stream`; reading from memory is never pending.
fn next<T: DeserializeOwned>(stream: &mut &[u8]) -> Result<T, FrameError> {
    let mut read = pin!(read_frame::<_, T>(stream));
    match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("reading from memory was pending"),
    }
}

/// `msg` written as a frame and read back is `msg` (compared as JSON: not every type is `Eq`).
fn same_again<T: Serialize + DeserializeOwned>(msg: &T) {
    let Ok(frame) = encode_frame(msg) else { return };
    let back: T = next(&mut frame.as_slice()).expect("a frame herder writes reads back");
    let (sent, read) = (serde_json::to_value(msg).unwrap(), serde_json::to_value(&back).unwrap());
    assert_eq!(sent, read, "a message changed on the wire");
}

fuzz_target!(|data: &[u8]| {
    let Some((side, mut stream)) = data.split_first() else { return };
    if side % 2 == 0 {
        let Ok(hello) = next::<Hello>(&mut stream) else { return };
        same_again(&hello);
        while let Ok(request) = next::<Request>(&mut stream) {
            same_again(&request);
        }
    } else {
        let Ok(_) = next::<HelloReply>(&mut stream) else { return };
        while let Ok(response) = next::<Response>(&mut stream) {
            let _ = format!("{response:?}");
        }
    }
});
