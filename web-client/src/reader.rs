//! `Read + Seek` over a JavaScript `Uint8Array`: the GGUF stays in the JavaScript heap and only
//! the pieces being parsed cross into wasm memory, so loading a 491 MB model does not need a
//! second 491 MB inside the module (wasm memory never shrinks once grown).

use js_sys::Uint8Array;
use std::io::{Read, Seek, SeekFrom};

pub struct JsReader {
    data: Uint8Array,
    pos: u64,
    len: u64,
}

impl JsReader {
    pub fn new(data: Uint8Array) -> Self {
        let len = data.length() as u64;
        Self { data, pos: 0, len }
    }
}

impl Read for JsReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n > 0 {
            let start = self.pos as u32;
            self.data
                .subarray(start, start + n as u32)
                .copy_to(&mut buf[..n]);
            self.pos += n as u64;
        }
        Ok(n)
    }
}

impl Seek for JsReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )),
        }
    }
}
