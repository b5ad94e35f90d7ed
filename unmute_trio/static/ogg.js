// Ogg framing for Opus audio (RFC 3533 pages, RFC 7845 Opus mapping): a writer for the
// microphone stream and a streaming reader for the bot's audio. No dependencies.

const OGG_MAGIC = [0x4f, 0x67, 0x67, 0x53]; // "OggS"
const HEADER_SIZE = 27;
export const FLAG_CONTINUED = 0x01;
export const FLAG_BOS = 0x02;
export const FLAG_EOS = 0x04;
// Opus granule positions always count 48 kHz samples, whatever the input rate (RFC 7845 §4).
export const GRANULE_RATE = 48000;
// Largest page: 255 segments of 255 bytes. Bounds what the reader holds between calls.
const MAX_PAGE_SIZE = HEADER_SIZE + 255 + 255 * 255;
// A packet may span pages; Opus packets are at most a few KB, so 1 MB only catches garbage.
const MAX_PACKET_SIZE = 1 << 20;

// CRC-32 as Ogg defines it: polynomial 0x04c11db7, most significant bit first, initial value 0,
// no final inversion (so not the zlib CRC).
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let bit = 0; bit < 8; bit++) {
      r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    }
    table[i] = r >>> 0;
  }
  return table;
})();

export function oggCrc32(bytes) {
  let crc = 0;
  for (let i = 0; i < bytes.length; i++) {
    crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ bytes[i]) & 0xff]) >>> 0;
  }
  return crc >>> 0;
}

function ascii(text) {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

function startsWith(bytes, prefix) {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

const OPUS_HEAD = ascii("OpusHead");
const OPUS_TAGS = ascii("OpusTags");

/** Build one Ogg page holding whole `packets` (Uint8Arrays). `granule` is a BigInt. */
export function buildPage({ headerType, granule, serial, sequence, packets }) {
  const lacing = [];
  let dataSize = 0;
  for (const packet of packets) {
    // A packet is cut into 255-byte segments and ends with one shorter segment (maybe 0 bytes).
    for (let left = packet.length; ; left -= 255) {
      lacing.push(Math.min(left, 255));
      if (left < 255) break;
    }
    dataSize += packet.length;
  }
  if (lacing.length > 255) throw new Error("too much data for one Ogg page");
  const page = new Uint8Array(HEADER_SIZE + lacing.length + dataSize);
  const view = new DataView(page.buffer);
  page.set(OGG_MAGIC, 0);
  page[4] = 0; // stream structure version
  page[5] = headerType;
  view.setBigInt64(6, granule, true);
  view.setUint32(14, serial >>> 0, true);
  view.setUint32(18, sequence >>> 0, true);
  // bytes 22-25: CRC, computed below over the page with this field at zero
  page[26] = lacing.length;
  page.set(lacing, HEADER_SIZE);
  let at = HEADER_SIZE + lacing.length;
  for (const packet of packets) {
    page.set(packet, at);
    at += packet.length;
  }
  view.setUint32(22, oggCrc32(page), true);
  return page;
}

/** The Opus identification header (RFC 7845 §5.1), mono or stereo, mapping family 0. */
export function opusHeadPacket({ channels = 1, preSkip = 312, inputSampleRate = 24000 } = {}) {
  const packet = new Uint8Array(19);
  const view = new DataView(packet.buffer);
  packet.set(OPUS_HEAD, 0);
  packet[8] = 1; // version
  packet[9] = channels;
  view.setUint16(10, preSkip, true); // in 48 kHz samples
  view.setUint32(12, inputSampleRate, true); // informative only
  view.setInt16(16, 0, true); // output gain
  packet[18] = 0; // channel mapping family
  return packet;
}

/** The Opus comment header (RFC 7845 §5.2) with a vendor string and no comments. */
export function opusTagsPacket(vendor = "unmute-trio browser client") {
  const vendorBytes = new TextEncoder().encode(vendor);
  const packet = new Uint8Array(8 + 4 + vendorBytes.length + 4);
  const view = new DataView(packet.buffer);
  packet.set(OPUS_TAGS, 0);
  view.setUint32(8, vendorBytes.length, true);
  packet.set(vendorBytes, 12);
  view.setUint32(12 + vendorBytes.length, 0, true); // no user comments
  return packet;
}

/**
 * Wraps Opus packets into an Ogg Opus stream: the OpusHead page (beginning of stream), the
 * OpusTags page, then one page per `packetsPerPage` packets. Each page stands alone, so each
 * can be sent as its own message.
 */
export class OggOpusWriter {
  constructor({
    serial = crypto.getRandomValues(new Uint32Array(1))[0],
    inputSampleRate = 24000,
    preSkip = 312,
    packetsPerPage = 2,
  } = {}) {
    this.serial = serial;
    this.inputSampleRate = inputSampleRate;
    this.preSkip = preSkip;
    this.packetsPerPage = packetsPerPage;
    this.sequence = 0;
    this.granule = 0n; // 48 kHz samples of every packet written so far
    this.pending = []; // packets of the page being filled; at most packetsPerPage - 1
  }

  /** The two header pages; they must be sent before any audio page. */
  headerPages() {
    const head = opusHeadPacket({ preSkip: this.preSkip, inputSampleRate: this.inputSampleRate });
    return [this._page(FLAG_BOS, [head], 0n), this._page(0, [opusTagsPacket()], 0n)];
  }

  /** Add one Opus packet lasting `samples48k`; returns a finished page or null. */
  addPacket(packet, samples48k) {
    this.pending.push(packet);
    this.granule += BigInt(samples48k);
    if (this.pending.length < this.packetsPerPage) return null;
    return this.flush();
  }

  /** The page of the packets added since the last page, or null if there are none. */
  flush() {
    if (this.pending.length === 0) return null;
    const page = this._page(0, this.pending, this.granule);
    this.pending = [];
    return page;
  }

  _page(headerType, packets, granule) {
    const page = buildPage({
      headerType,
      granule,
      serial: this.serial,
      sequence: this.sequence,
      packets,
    });
    this.sequence += 1;
    return page;
  }
}

/** Parse one whole page at the start of `bytes`; null if `bytes` holds less than a page. */
export function parsePage(bytes) {
  if (bytes.length < HEADER_SIZE) return null;
  if (!startsWith(bytes, OGG_MAGIC)) throw new Error("not an Ogg page (bad capture pattern)");
  if (bytes[4] !== 0) throw new Error(`unsupported Ogg version ${bytes[4]}`);
  const segments = bytes[26];
  if (bytes.length < HEADER_SIZE + segments) return null;
  const lacing = bytes.subarray(HEADER_SIZE, HEADER_SIZE + segments);
  let size = HEADER_SIZE + segments;
  for (const value of lacing) size += value;
  if (bytes.length < size) return null;
  const page = bytes.slice(0, size);
  const view = new DataView(page.buffer);
  const crc = view.getUint32(22, true);
  view.setUint32(22, 0, true);
  if (oggCrc32(page) !== crc) throw new Error("Ogg page CRC mismatch");
  view.setUint32(22, crc, true);
  return {
    size,
    headerType: page[5],
    granule: view.getBigInt64(6, true),
    serial: view.getUint32(14, true),
    sequence: view.getUint32(18, true),
    lacing: page.slice(HEADER_SIZE, HEADER_SIZE + segments),
    body: page.subarray(HEADER_SIZE + segments),
  };
}

/**
 * Streaming reader: `push(bytes)` returns the packets completed by those bytes, as
 * `{data, bos}` where `bos` marks the first packet of a new logical stream. Pages may be split
 * across pushes in any way; packets may span pages.
 */
export class OggPacketReader {
  constructor() {
    this.buffer = new Uint8Array(0); // the start of a page whose end has not arrived
    this.partial = []; // segments of a packet continued on the next page
    this.partialSize = 0;
  }

  push(bytes) {
    let data = bytes;
    if (this.buffer.length > 0) {
      data = new Uint8Array(this.buffer.length + bytes.length);
      data.set(this.buffer, 0);
      data.set(bytes, this.buffer.length);
    }
    const packets = [];
    let offset = 0;
    for (;;) {
      const page = parsePage(data.subarray(offset));
      if (page === null) break;
      offset += page.size;
      this._readPage(page, packets);
    }
    this.buffer = data.slice(offset);
    if (this.buffer.length > MAX_PAGE_SIZE) throw new Error("Ogg data with no page boundary");
    return packets;
  }

  _readPage(page, packets) {
    const bos = (page.headerType & FLAG_BOS) !== 0;
    if (bos || !(page.headerType & FLAG_CONTINUED)) {
      // A page that does not continue a packet drops any unfinished one (a lost page).
      this.partial = [];
      this.partialSize = 0;
    }
    let at = 0;
    let first = true;
    for (const value of page.lacing) {
      this.partial.push(page.body.subarray(at, at + value));
      this.partialSize += value;
      at += value;
      if (this.partialSize > MAX_PACKET_SIZE) throw new Error("Ogg packet too large");
      if (value < 255) {
        const packet = new Uint8Array(this.partialSize);
        let o = 0;
        for (const piece of this.partial) {
          packet.set(piece, o);
          o += piece.length;
        }
        packets.push({ data: packet, bos: bos && first });
        first = false;
        this.partial = [];
        this.partialSize = 0;
      }
    }
  }
}

/** The fields of an OpusHead packet, or null if `packet` is not one. */
export function parseOpusHead(packet) {
  if (packet.length < 19 || !startsWith(packet, OPUS_HEAD)) return null;
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  return {
    channels: packet[9],
    preSkip: view.getUint16(10, true),
    inputSampleRate: view.getUint32(12, true),
  };
}

export function isOpusTags(packet) {
  return startsWith(packet, OPUS_TAGS);
}
