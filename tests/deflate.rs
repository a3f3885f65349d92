//! permessage-deflate (RFC 7692) through the real server with a raw client
//! whose compression is flate2's, used directly: the offer and the answer,
//! a compressed request, compressed book frames (each inflating to a
//! message the decoder takes) beside small frames sent as they are, a
//! deflate bomb closed with 1009 and counted, and no extension for a
//! client that does not offer it.

use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tickwire::config::ServeConfig;
use tickwire::wire::decode::{Decoder, ServerMessage};

mod common;

use common::raw::{self, RawWs, CLOSE};
use common::*;

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 1024);
    c.compress_vec(payload, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let input = [data, &TAIL].concat();
    let mut out = Vec::with_capacity(data.len() * 20 + 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(d.total_in() as usize, input.len(), "inflated whole");
    out
}

async fn server(compress_min_bytes: usize) -> tickwire::server::Running {
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=2,rate=400,book=50".into()],
        compress_min_bytes,
        ..ServeConfig::default()
    })
    .await;
    common::eventually(Duration::from_secs(10), "both symbols", || {
        server.market.symbols.len() == 2
    })
    .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_and_book_frames_and_a_bomb_closed_with_1009() {
    let server = server(256).await;
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    let tcp = raw::connect_from(localhost, server.addr).await.unwrap();
    let offer = "permessage-deflate; client_max_window_bits";
    let (mut ws, head) = RawWs::upgrade_offering(tcp, offer).await.unwrap();
    // TC0: the answer: no context kept on either side.
    assert_eq!(
        raw::header(&head, "sec-websocket-extensions"),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    // TC1: a compressed request (RSV1 on a text frame) is understood.
    let req = br#"{"op":"subscribe","symbols":["*"],"channels":["quotes","book.20"],"id":7}"#;
    ws.send_with_bits(0xc1, &deflate(req)).await;
    // TC2: book.20 frames (696 bytes) come compressed, quotes (80) and
    // replies as they are; every one decodes.
    let mut decoder = Decoder::new();
    let (mut packed, mut plain, mut books) = (0, 0, 0);
    let mut ack = false;
    while books < 20 {
        let (op, payload) = ws.read_frame().await.unwrap();
        let data = if ws.last_rsv1 {
            packed += 1;
            let data = inflate(&payload);
            assert!(
                payload.len() < data.len(),
                "{} -> {}",
                payload.len(),
                data.len()
            );
            assert!(data.len() >= 256);
            data
        } else {
            plain += 1;
            assert!(
                payload.len() < 256 + 14,
                "{} bytes uncompressed",
                payload.len()
            );
            payload
        };
        match decoder.decode_message(op == 2, &data).unwrap() {
            ServerMessage::Book(b) => {
                assert!(ws.last_rsv1, "a book frame went uncompressed");
                assert_eq!((b.bids.len(), b.asks.len()), (20, 20));
                books += 1;
            }
            ServerMessage::Control(v) if v["type"] == "ack" => {
                assert_eq!(v["id"], 7);
                ack = true;
            }
            _ => {}
        }
    }
    assert!(
        ack && packed >= 20 && plain > 0,
        "{packed} compressed, {plain} not"
    );
    let (_, metrics) = http_get(server.addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert_eq!(metric(&metrics, "tickwire_deflate_connections"), 1);
    // TC3: a bomb: 1 MiB of spaces in about 1 KB, past max_message_bytes
    // (64 KiB) once inflated: 1009, counted.
    let bomb = deflate(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 4096, "{}", bomb.len());
    ws.send_with_bits(0xc1, &bomb).await;
    let (close, _) = ws.read_until_close(Duration::from_secs(10)).await;
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 1009, "{reason}");
    assert!(
        reason.contains("inflates to more than 65536 bytes"),
        "{reason}"
    );
    let (_, metrics) = http_get(server.addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert_eq!(
        metric(&metrics, "tickwire_inflated_too_big_closes_total"),
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_offer_or_with_compression_off_nothing_is_compressed() {
    for (min, offer) in [(256, "x-webkit-deflate-frame"), (0, "permessage-deflate")] {
        let server = server(min).await;
        let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
        let tcp = raw::connect_from(localhost, server.addr).await.unwrap();
        let (mut ws, head) = RawWs::upgrade_offering(tcp, offer).await.unwrap();
        assert_eq!(
            raw::header(&head, "sec-websocket-extensions"),
            None,
            "{offer}"
        );
        ws.send_text(r#"{"op":"subscribe","symbols":["*"],"channels":["book.20"]}"#)
            .await;
        for _ in 0..20 {
            ws.read_frame().await.unwrap();
            assert!(!ws.last_rsv1);
        }
        // RSV1 without the extension is a protocol error.
        ws.send_with_bits(0xc1, &deflate(b"{}")).await;
        let (close, _) = ws.read_until_close(Duration::from_secs(10)).await;
        assert_eq!(close.map(|c| c.0), Some(1002));
        let _ = CLOSE;
        server.stop().await;
    }
}
