//! A small Python pickle reader: the opcodes PyTorch checkpoints use (protocols 2 to 5), building
//! a value tree without executing anything. Globals stay names; `REDUCE` and `BUILD` are recorded
//! as calls for the caller to interpret; persistent ids are kept as values.

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Insertion order kept (OrderedDict and dict alike).
    Dict(Vec<(Value, Value)>),
    /// `module.name`
    Global(String, String),
    /// `callable(*args)`, not evaluated.
    Call(Box<Value>, Vec<Value>),
    /// `obj.__setstate__(state)` / `obj.__dict__.update(state)`, not evaluated.
    Build(Box<Value>, Box<Value>),
    /// A persistent id (PyTorch's storage references).
    PersId(Box<Value>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
}

enum Item {
    V(Value),
    Mark,
}

/// Reads one pickle from `data` starting at `pos`; returns the value and the position after its
/// STOP. `what` names the file in errors.
pub fn read(data: &[u8], mut pos: usize, what: &str) -> Result<(Value, usize)> {
    let err = |reason: String| Error::Checkpoint { file: what.to_string(), reason };
    let mut stack: Vec<Item> = vec![];
    let mut memo: std::collections::HashMap<u32, Value> = std::collections::HashMap::new();
    macro_rules! take {
        ($n:expr) => {{
            let n: usize = $n;
            if pos + n > data.len() {
                return Err(Error::Truncated { file: what.to_string(), what: format!("pickle data at byte {pos} needs {n} more bytes") });
            }
            let s = &data[pos..pos + n];
            pos += n;
            s
        }};
    }
    // a little-endian unsigned length of 1, 4 or 8 bytes
    macro_rules! len {
        ($width:expr) => {{
            let w: usize = $width;
            let b = take!(w);
            let mut v = [0u8; 8];
            v[..w].copy_from_slice(b);
            u64::from_le_bytes(v) as usize
        }};
    }
    fn pop(stack: &mut Vec<Item>, err: &dyn Fn(String) -> Error) -> Result<Value> {
        match stack.pop() {
            Some(Item::V(v)) => Ok(v),
            Some(Item::Mark) => Err(err("unexpected MARK on the stack".into())),
            None => Err(err("stack underflow".into())),
        }
    }
    fn pop_mark(stack: &mut Vec<Item>, err: &dyn Fn(String) -> Error) -> Result<Vec<Value>> {
        let mut out = vec![];
        loop {
            match stack.pop() {
                Some(Item::V(v)) => out.push(v),
                Some(Item::Mark) => break,
                None => return Err(err("MARK not found".into())),
            }
        }
        out.reverse();
        Ok(out)
    }
    let last = |stack: &mut Vec<Item>| -> Result<Value> {
        match stack.last() {
            Some(Item::V(v)) => Ok(v.clone()),
            _ => Err(err("nothing to memoize".into())),
        }
    };
    loop {
        let at = pos;
        let op = take!(1)[0];
        match op {
            0x80 => {
                let proto = take!(1)[0];
                if proto > 5 {
                    return Err(err(format!("pickle protocol {proto} is newer than 5")));
                }
            }
            0x95 => {
                take!(8); // FRAME: length only
            }
            b'.' => {
                let v = pop(&mut stack, &err)?;
                return Ok((v, pos));
            }
            b'(' => stack.push(Item::Mark),
            b'N' => stack.push(Item::V(Value::None)),
            0x88 => stack.push(Item::V(Value::Bool(true))),
            0x89 => stack.push(Item::V(Value::Bool(false))),
            b'K' => stack.push(Item::V(Value::Int(take!(1)[0] as i64))),
            b'M' => {
                let b = take!(2);
                stack.push(Item::V(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64)))
            }
            b'J' => {
                let b = take!(4);
                stack.push(Item::V(Value::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)))
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes
                let n = take!(1)[0] as usize;
                let b = take!(n);
                if n > 8 {
                    // only the legacy magic number is this long; keep its low 64 bits
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&b[..8]);
                    stack.push(Item::V(Value::Int(i64::from_le_bytes(v))));
                } else {
                    let mut v = if n > 0 && b[n - 1] & 0x80 != 0 { [0xffu8; 8] } else { [0u8; 8] };
                    v[..n].copy_from_slice(b);
                    stack.push(Item::V(Value::Int(i64::from_le_bytes(v))));
                }
            }
            b'G' => {
                let b = take!(8);
                let mut v = [0u8; 8];
                v.copy_from_slice(b);
                stack.push(Item::V(Value::Float(f64::from_be_bytes(v))))
            }
            b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                let n = len!(match op {
                    b'X' | b'T' => 4,
                    0x8d => 8,
                    _ => 1,
                });
                let b = take!(n);
                let s = String::from_utf8(b.to_vec()).map_err(|_| err(format!("string at byte {at} is not UTF-8")))?;
                stack.push(Item::V(Value::Str(s)));
            }
            b'B' | b'C' | 0x8e => {
                let n = len!(match op {
                    b'B' => 4,
                    0x8e => 8,
                    _ => 1,
                });
                stack.push(Item::V(Value::Bytes(take!(n).to_vec())));
            }
            b')' => stack.push(Item::V(Value::Tuple(vec![]))),
            b't' => {
                let items = pop_mark(&mut stack, &err)?;
                stack.push(Item::V(Value::Tuple(items)));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = vec![];
                for _ in 0..n {
                    items.push(pop(&mut stack, &err)?);
                }
                items.reverse();
                stack.push(Item::V(Value::Tuple(items)));
            }
            b']' => stack.push(Item::V(Value::List(vec![]))),
            b'l' => {
                let items = pop_mark(&mut stack, &err)?;
                stack.push(Item::V(Value::List(items)));
            }
            b'a' => {
                let v = pop(&mut stack, &err)?;
                match stack.last_mut() {
                    Some(Item::V(Value::List(l))) => l.push(v),
                    _ => return Err(err(format!("APPEND at byte {at} without a list"))),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack, &err)?;
                match stack.last_mut() {
                    Some(Item::V(Value::List(l))) => l.extend(items),
                    _ => return Err(err(format!("APPENDS at byte {at} without a list"))),
                }
            }
            b'}' => stack.push(Item::V(Value::Dict(vec![]))),
            b'd' => {
                let items = pop_mark(&mut stack, &err)?;
                let pairs = items.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone())).collect();
                stack.push(Item::V(Value::Dict(pairs)));
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack, &err)?;
                    let k = pop(&mut stack, &err)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack, &err)?
                };
                if items.len() % 2 != 0 {
                    return Err(err(format!("SETITEMS at byte {at} with an odd number of items")));
                }
                match stack.last_mut() {
                    Some(Item::V(Value::Dict(d))) => d.extend(items.chunks(2).map(|c| (c[0].clone(), c[1].clone()))),
                    // setting items on an object built by a call (OrderedDict())
                    Some(Item::V(Value::Call(f, args))) if is_ordered_dict(f) && args.is_empty() => {
                        let pairs: Vec<(Value, Value)> = items.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
                        let top = stack.pop();
                        drop(top);
                        stack.push(Item::V(Value::Dict(pairs)));
                    }
                    _ => return Err(err(format!("SETITEM(S) at byte {at} without a dict"))),
                }
            }
            b'c' => {
                let line = |pos: &mut usize| -> Result<String> {
                    let end = data[*pos..].iter().position(|&b| b == b'\n').ok_or_else(|| Error::Truncated { file: what.to_string(), what: format!("GLOBAL at byte {at}") })?;
                    let s = String::from_utf8_lossy(&data[*pos..*pos + end]).into_owned();
                    *pos += end + 1;
                    Ok(s)
                };
                let module = line(&mut pos)?;
                let name = line(&mut pos)?;
                stack.push(Item::V(Value::Global(module, name)));
            }
            0x93 => {
                let name = pop(&mut stack, &err)?;
                let module = pop(&mut stack, &err)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Item::V(Value::Global(m, n))),
                    _ => return Err(err(format!("STACK_GLOBAL at byte {at} without two strings"))),
                }
            }
            b'R' => {
                let args = pop(&mut stack, &err)?;
                let f = pop(&mut stack, &err)?;
                let args = match args {
                    Value::Tuple(a) => a,
                    other => vec![other],
                };
                // OrderedDict() becomes an empty dict right away
                if is_ordered_dict(&f) && args.is_empty() {
                    stack.push(Item::V(Value::Dict(vec![])));
                } else {
                    stack.push(Item::V(Value::Call(Box::new(f), args)));
                }
            }
            0x81 => {
                let args = pop(&mut stack, &err)?;
                let cls = pop(&mut stack, &err)?;
                let args = match args {
                    Value::Tuple(a) => a,
                    other => vec![other],
                };
                stack.push(Item::V(Value::Call(Box::new(cls), args)));
            }
            b'b' => {
                let state = pop(&mut stack, &err)?;
                let obj = pop(&mut stack, &err)?;
                // A dict's state (a state_dict's `_metadata`) does not change its items.
                match obj {
                    Value::Dict(_) => stack.push(Item::V(obj)),
                    other => stack.push(Item::V(Value::Build(Box::new(other), Box::new(state)))),
                }
            }
            b'Q' => {
                let pid = pop(&mut stack, &err)?;
                stack.push(Item::V(Value::PersId(Box::new(pid))));
            }
            b'q' => {
                let i = take!(1)[0] as u32;
                memo.insert(i, last(&mut stack)?);
            }
            b'r' => {
                let b = take!(4);
                memo.insert(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), last(&mut stack)?);
            }
            0x94 => {
                let i = memo.len() as u32;
                memo.insert(i, last(&mut stack)?);
            }
            b'h' | b'j' => {
                let i = if op == b'h' {
                    take!(1)[0] as u32
                } else {
                    let b = take!(4);
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                };
                let v = memo.get(&i).cloned().ok_or_else(|| err(format!("memo {i} read at byte {at} before it was written")))?;
                stack.push(Item::V(v));
            }
            b'0' => {
                stack.pop();
            }
            b'1' => {
                pop_mark(&mut stack, &err)?;
            }
            b'2' => {
                let v = last(&mut stack)?;
                stack.push(Item::V(v));
            }
            other => return Err(Error::UnknownPickleOpcode { file: what.to_string(), opcode: other, offset: at }),
        }
    }
}

fn is_ordered_dict(f: &Value) -> bool {
    matches!(f, Value::Global(m, n) if m == "collections" && n == "OrderedDict")
}

/// The opcodes [`read`] understands, for documentation and reports.
pub const OPCODES: &str = "PROTO FRAME STOP MARK NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 BINFLOAT BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND APPENDS EMPTY_DICT DICT SETITEM SETITEMS GLOBAL STACK_GLOBAL REDUCE NEWOBJ BUILD BINPERSID BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET POP POP_MARK DUP";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_protocol_2_pickle() {
        // pickle.dumps(collections.OrderedDict([('a', (1, -2, 'x')), ('b', [True, None, 300, 1.5])]), 2)
        let mut p = vec![0x80, 2];
        p.extend(b"ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00aq\x02K\x01J\xfe\xff\xff\xffX\x01\x00\x00\x00x\x87q\x03X\x01\x00\x00\x00bq\x04]q\x05(\x88NM,\x01G?\xf8\x00\x00\x00\x00\x00\x00eu.");
        let (v, end) = read(&p, 0, "test").unwrap();
        assert_eq!(end, p.len());
        let Value::Dict(d) = v else { panic!("{v:?}") };
        assert_eq!(d[0].0, Value::Str("a".into()));
        assert_eq!(d[0].1, Value::Tuple(vec![Value::Int(1), Value::Int(-2), Value::Str("x".into())]));
        assert_eq!(d[1].1, Value::List(vec![Value::Bool(true), Value::None, Value::Int(300), Value::Float(1.5)]));
    }

    #[test]
    fn unknown_opcode_and_truncation_are_named() {
        let e = read(&[0x80, 2, b'I', b'1', b'\n', b'.'], 0, "f.pth").err().unwrap();
        assert!(matches!(e, Error::UnknownPickleOpcode { opcode: b'I', offset: 2, .. }), "{e}");
        let e = read(&[0x80, 2, b'X', 9, 0, 0, 0, b'a'], 0, "f.pth").err().unwrap();
        assert!(matches!(e, Error::Truncated { .. }), "{e}");
    }
}
