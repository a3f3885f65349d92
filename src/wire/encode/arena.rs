//! Frames carved from arenas: an encoder's frames are split off one
//! `BytesMut` chunk after another (no allocation per frame), and frames
//! made apart from the publisher (snapshots) get allocations of their own;
//! each chunk has a process-unique id, by which the outbox keeps one
//! reference per chunk rather than per frame.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, BytesMut};

use super::{
    put_header, EncodedUpdate, FrameEncoder, ARENA_CHUNK, MAX_HEADER_LEN, OPCODE_BINARY,
    OPCODE_TEXT,
};

/// Chunk ids, unique in the process whichever encoder carves the chunk.
pub(super) static NEXT_CHUNK: AtomicU64 = AtomicU64::new(0);

/// An arena chunk and its id.
pub(super) struct Arena {
    pub(super) bytes: BytesMut,
    pub(super) id: u64,
}

impl Arena {
    pub(super) fn new(capacity: usize) -> Self {
        Arena {
            bytes: BytesMut::with_capacity(capacity),
            // Relaxed: only uniqueness matters, which the counter gives in
            // any order.
            id: NEXT_CHUNK.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl FrameEncoder {
    /// A message of `len` binary payload bytes that `binary` writes and the
    /// JSON text that `json` writes, as frames carved from the arenas.
    pub(super) fn encode_with(
        &mut self,
        len: usize,
        binary: impl FnOnce(&mut BytesMut),
        json: impl FnOnce(&mut Vec<u8>),
    ) -> EncodedUpdate {
        binary(carve(&mut self.arena, OPCODE_BINARY, len));
        let binary = self.arena.bytes.split().freeze();
        self.json.clear();
        json(&mut self.json);
        carve(&mut self.json_arena, OPCODE_TEXT, self.json.len()).put_slice(&self.json);
        let json = self.json_arena.bytes.split().freeze();
        EncodedUpdate {
            binary,
            json,
            chunks: [self.arena.id, self.json_arena.id],
            deflated: None,
        }
        .with_deflated()
    }
}

/// [`FrameEncoder::encode_with`] in allocations of its own, for a snapshot
/// a connection asks for (a subscribe, a catch-up): off the publisher's
/// thread, and rare.
pub(super) fn own_frames(
    len: usize,
    binary: impl FnOnce(&mut BytesMut),
    json: impl FnOnce(&mut Vec<u8>),
) -> EncodedUpdate {
    let mut b = Arena::new(MAX_HEADER_LEN + len);
    put_header(&mut b.bytes, OPCODE_BINARY, len);
    binary(&mut b.bytes);
    let mut payload = Vec::with_capacity(len * 3);
    json(&mut payload);
    let mut j = Arena::new(MAX_HEADER_LEN + payload.len());
    put_header(&mut j.bytes, OPCODE_TEXT, payload.len());
    j.bytes.put_slice(&payload);
    EncodedUpdate {
        chunks: [b.id, j.id],
        binary: b.bytes.freeze(),
        json: j.bytes.freeze(),
        deflated: None,
    }
    .with_deflated()
}

pub(super) fn carve(arena: &mut Arena, opcode: u8, payload_len: usize) -> &mut BytesMut {
    let need = MAX_HEADER_LEN + payload_len;
    if arena.bytes.capacity() - arena.bytes.len() < need {
        // A new chunk; frames already split off keep the old one alive.
        *arena = Arena::new(ARENA_CHUNK.max(need));
    }
    put_header(&mut arena.bytes, opcode, payload_len);
    &mut arena.bytes
}
