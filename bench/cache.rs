//! `switchyard-cache-bench serve-bytes`: a minimal hyper HTTP/1.1 server
//! answering every request with the same bytes. It is the floor a cache hit
//! is compared with in `bench/run.sh` (scenario 3), and the fast fixed-bytes
//! upstream of the scaling scenario.

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;

#[derive(Parser)]
#[command(name = "switchyard-cache-bench", about = "Cache benchmark helpers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one fixed body (application/json) to every request.
    ServeBytes {
        /// Address to listen on (loopback).
        #[arg(long)]
        listen: SocketAddr,
        /// File whose bytes are the body.
        #[arg(long)]
        body: std::path::PathBuf,
    },
}

fn main() {
    let Command::ServeBytes { listen, body } = Cli::parse().command;
    let body = Bytes::from(std::fs::read(&body).expect("the body file is readable"));
    // A multi-threaded runtime like the gateway's (one worker per CPU it is
    // pinned to), so the two compare fairly.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(serve_bytes(listen, body));
}

async fn serve_bytes(listen: SocketAddr, body: Bytes) {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("the listen address is free");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let mut resp = Response::new(Full::new(body));
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
