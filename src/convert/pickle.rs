//! A small Python pickle reader: the opcodes PyTorch checkpoints use (protocols 2 to 5), building
//! a value tree without executing anything. Globals stay names; `REDUCE` and `BUILD` are recorded
//! as calls for the caller to interpret; persistent ids are kept as values.
//!
//! Hostile input is bounded: every length is checked against the bytes present before anything is
//! allocated, values nest at most [`MAX_DEPTH`] deep (so dropping, printing or walking a tree
//! recurses a bounded number of times), and memo entries and `DUP` are shared ([`Value::Shared`]),
//! not copied, so a short pickle that re-uses its memo cannot grow exponentially. A container
//! changed after it was memoised is copied once (copy on write), and such copies are charged to a
//! budget proportional to the input's length.

use std::rc::Rc;

use crate::error::{Error, Result};

/// How deep values may nest (a state dict nests about 6 deep).
pub const MAX_DEPTH: u32 = 256;

#[derive(Clone, Debug)]
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
    /// A value the pickle refers to more than once (a memo entry or a `DUP`); [`Value::get`] sees
    /// through it.
    Shared(Rc<Value>),
}

/// Equal values, whether shared or not.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self.get(), other.get()) {
            (None, None) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Float(a), Float(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Tuple(a), Tuple(b)) | (List(a), List(b)) => a == b,
            (Dict(a), Dict(b)) => a == b,
            (Global(a, b), Global(c, d)) => a == c && b == d,
            (Call(f, a), Call(g, b)) => f == g && a == b,
            (Build(o, s), Build(p, t)) => o == p && s == t,
            (PersId(a), PersId(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// The value itself, through any [`Value::Shared`] wrapper.
    pub fn get(&self) -> &Value {
        let mut v = self;
        while let Value::Shared(r) = v {
            v = r;
        }
        v
    }
    pub fn as_str(&self) -> Option<&str> {
        match self.get() {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self.get() {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self.get() {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
    /// A description of at most about 200 characters, for error messages (a `Debug` print of a
    /// shared tree can be exponentially long).
    pub fn brief(&self) -> String {
        let mut s = String::new();
        self.brief_into(&mut s);
        if s.len() > 200 {
            let mut cut = 200;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push('…');
        }
        s
    }
    fn brief_into(&self, s: &mut String) {
        use std::fmt::Write;
        if s.len() > 200 {
            return;
        }
        let seq = |s: &mut String, open: &str, items: &[Value], close: &str| {
            s.push_str(open);
            for (i, v) in items.iter().enumerate() {
                if s.len() > 200 {
                    break;
                }
                if i > 0 {
                    s.push_str(", ");
                }
                v.brief_into(s);
            }
            s.push_str(close);
        };
        match self.get() {
            Value::None => s.push_str("None"),
            Value::Bool(b) => s.push_str(if *b { "True" } else { "False" }),
            Value::Int(i) => _ = write!(s, "{i}"),
            Value::Float(f) => _ = write!(s, "{f}"),
            Value::Str(t) => _ = write!(s, "{:?}", &t[..t.char_indices().nth(64).map_or(t.len(), |(i, _)| i)]),
            Value::Bytes(b) => _ = write!(s, "<{} bytes>", b.len()),
            Value::Tuple(v) => seq(s, "(", v, ")"),
            Value::List(v) => seq(s, "[", v, "]"),
            Value::Dict(d) => _ = write!(s, "{{<{} items>}}", d.len()),
            Value::Global(m, n) => _ = write!(s, "{m}.{n}"),
            Value::Call(f, a) => {
                f.brief_into(s);
                seq(s, "(", a, ")");
            }
            Value::Build(o, _) => {
                s.push_str("build ");
                o.brief_into(s);
            }
            Value::PersId(p) => {
                s.push_str("persid ");
                p.brief_into(s);
            }
            Value::Shared(_) => unreachable!("get() sees through Shared"),
        }
    }
}

/// A copy of `v` that shares what is already shared, charging every node copied to `budget`.
/// Recursion is bounded by [`MAX_DEPTH`].
fn counted_clone(v: &Value, budget: &mut u64, err: &dyn Fn(String) -> Error) -> Result<Value> {
    if *budget == 0 {
        return Err(err("the pickle copies more values than its length allows (a memo bomb?)".into()));
    }
    *budget -= 1;
    let all = |items: &[Value], budget: &mut u64| items.iter().map(|x| counted_clone(x, budget, err)).collect::<Result<Vec<_>>>();
    Ok(match v {
        Value::Tuple(items) => Value::Tuple(all(items, budget)?),
        Value::List(items) => Value::List(all(items, budget)?),
        Value::Dict(pairs) => Value::Dict(pairs.iter().map(|(k, x)| Ok((counted_clone(k, budget, err)?, counted_clone(x, budget, err)?))).collect::<Result<_>>()?),
        Value::Call(f, a) => Value::Call(Box::new(counted_clone(f, budget, err)?), all(a, budget)?),
        Value::Build(o, s) => Value::Build(Box::new(counted_clone(o, budget, err)?), Box::new(counted_clone(s, budget, err)?)),
        Value::PersId(p) => Value::PersId(Box::new(counted_clone(p, budget, err)?)),
        // leaves, and shared values (one pointer copied)
        other => other.clone(),
    })
}

/// A value on the unpickling stack with its nesting depth.
enum Item {
    V(Value, u32),
    Mark,
}

/// Reads one pickle from `data` starting at `pos`; returns the value and the position after its
/// STOP. `what` names the file in errors.
pub fn read(data: &[u8], mut pos: usize, what: &str) -> Result<(Value, usize)> {
    let err = |reason: String| Error::Checkpoint { file: what.to_string(), reason };
    let mut stack: Vec<Item> = vec![];
    let mut memo: std::collections::HashMap<u32, (Rc<Value>, u32)> = std::collections::HashMap::new();
    // values copied on write after memoisation: bounded by the input's length
    let mut budget: u64 = (1 << 20) + 16 * data.len() as u64;
    if pos > data.len() {
        return Err(Error::Truncated { file: what.to_string(), what: format!("pickle at byte {pos} starts past the end") });
    }
    macro_rules! take {
        ($n:expr) => {{
            let n: usize = $n;
            // `pos <= data.len()` always holds, so this cannot overflow
            if n > data.len() - pos {
                return Err(Error::Truncated { file: what.to_string(), what: format!("pickle data at byte {pos} needs {n} more bytes, {} are left", data.len() - pos) });
            }
            let s = &data[pos..pos + n];
            pos += n;
            s
        }};
    }
    // a little-endian unsigned length of 1, 4 or 8 bytes (lengths beyond usize saturate, and fail
    // the bounds check of `take!`)
    macro_rules! len {
        ($width:expr) => {{
            let w: usize = $width;
            let b = take!(w);
            let mut v = [0u8; 8];
            v[..w].copy_from_slice(b);
            usize::try_from(u64::from_le_bytes(v)).unwrap_or(usize::MAX)
        }};
    }
    let deeper = |depth: u32, at: usize| -> Result<u32> {
        if depth >= MAX_DEPTH {
            return Err(err(format!("values nest deeper than {MAX_DEPTH} levels at byte {at}")));
        }
        Ok(depth + 1)
    };
    fn pop(stack: &mut Vec<Item>, err: &dyn Fn(String) -> Error) -> Result<(Value, u32)> {
        match stack.pop() {
            Some(Item::V(v, d)) => Ok((v, d)),
            Some(Item::Mark) => Err(err("unexpected MARK on the stack".into())),
            None => Err(err("stack underflow".into())),
        }
    }
    /// The items above the topmost MARK and their greatest depth.
    fn pop_mark(stack: &mut Vec<Item>, err: &dyn Fn(String) -> Error) -> Result<(Vec<Value>, u32)> {
        let start = stack.iter().rposition(|i| matches!(i, Item::Mark)).ok_or_else(|| err("MARK not found".into()))?;
        let mut depth = 0;
        let out = stack
            .drain(start..)
            .skip(1)
            .map(|i| match i {
                Item::V(v, d) => {
                    depth = depth.max(d);
                    v
                }
                Item::Mark => unreachable!("the topmost MARK was skipped"),
            })
            .collect();
        Ok((out, depth))
    }
    /// Shares the top of the stack (for the memo or a DUP): it becomes a [`Value::Shared`].
    fn share_top(stack: &mut [Item], err: &dyn Fn(String) -> Error) -> Result<(Rc<Value>, u32)> {
        match stack.last_mut() {
            Some(Item::V(Value::Shared(rc), d)) => Ok((rc.clone(), *d)),
            Some(Item::V(v, d)) => {
                let rc = Rc::new(std::mem::replace(v, Value::None));
                *v = Value::Shared(rc.clone());
                Ok((rc, *d))
            }
            _ => Err(err("nothing to memoize".into())),
        }
    }
    /// The top of the stack to change in place (APPEND, SETITEM): a shared value is copied first
    /// (copy on write) unless nothing else holds it. `child` is the depth of what goes in.
    fn top_mut<'s>(stack: &'s mut [Item], child: u32, budget: &mut u64, err: &dyn Fn(String) -> Error) -> Result<Option<&'s mut Value>> {
        let Some(Item::V(v, d)) = stack.last_mut() else { return Ok(None) };
        if child >= MAX_DEPTH {
            return Err(err(format!("values nest deeper than {MAX_DEPTH} levels")));
        }
        *d = (*d).max(child + 1);
        if let Value::Shared(rc) = v {
            let rc = rc.clone();
            *v = Value::None;
            *v = match Rc::try_unwrap(rc) {
                Ok(inner) => inner,
                Err(rc) => counted_clone(&rc, budget, err)?,
            };
        }
        Ok(Some(v))
    }
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
                let (v, _) = pop(&mut stack, &err)?;
                return Ok((v, pos));
            }
            b'(' => stack.push(Item::Mark),
            b'N' => stack.push(Item::V(Value::None, 0)),
            0x88 => stack.push(Item::V(Value::Bool(true), 0)),
            0x89 => stack.push(Item::V(Value::Bool(false), 0)),
            b'K' => stack.push(Item::V(Value::Int(take!(1)[0] as i64), 0)),
            b'M' => {
                let b = take!(2);
                stack.push(Item::V(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64), 0))
            }
            b'J' => {
                let b = take!(4);
                stack.push(Item::V(Value::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64), 0))
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes
                let n = take!(1)[0] as usize;
                let b = take!(n);
                if n > 8 {
                    // only the legacy magic number is this long; keep its low 64 bits
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&b[..8]);
                    stack.push(Item::V(Value::Int(i64::from_le_bytes(v)), 0));
                } else {
                    let mut v = if n > 0 && b[n - 1] & 0x80 != 0 { [0xffu8; 8] } else { [0u8; 8] };
                    v[..n].copy_from_slice(b);
                    stack.push(Item::V(Value::Int(i64::from_le_bytes(v)), 0));
                }
            }
            b'G' => {
                let b = take!(8);
                let mut v = [0u8; 8];
                v.copy_from_slice(b);
                stack.push(Item::V(Value::Float(f64::from_be_bytes(v)), 0))
            }
            b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                let n = len!(match op {
                    b'X' | b'T' => 4,
                    0x8d => 8,
                    _ => 1,
                });
                let b = take!(n);
                let s = String::from_utf8(b.to_vec()).map_err(|_| err(format!("string at byte {at} is not UTF-8")))?;
                stack.push(Item::V(Value::Str(s), 0));
            }
            b'B' | b'C' | 0x8e => {
                let n = len!(match op {
                    b'B' => 4,
                    0x8e => 8,
                    _ => 1,
                });
                stack.push(Item::V(Value::Bytes(take!(n).to_vec()), 0));
            }
            b')' => stack.push(Item::V(Value::Tuple(vec![]), 1)),
            b't' => {
                let (items, d) = pop_mark(&mut stack, &err)?;
                stack.push(Item::V(Value::Tuple(items), deeper(d, at)?));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = vec![];
                let mut d = 0;
                for _ in 0..n {
                    let (v, dv) = pop(&mut stack, &err)?;
                    items.push(v);
                    d = d.max(dv);
                }
                items.reverse();
                stack.push(Item::V(Value::Tuple(items), deeper(d, at)?));
            }
            b']' => stack.push(Item::V(Value::List(vec![]), 1)),
            b'l' => {
                let (items, d) = pop_mark(&mut stack, &err)?;
                stack.push(Item::V(Value::List(items), deeper(d, at)?));
            }
            b'a' | b'e' => {
                let (items, d) = if op == b'a' {
                    let (v, d) = pop(&mut stack, &err)?;
                    (vec![v], d)
                } else {
                    pop_mark(&mut stack, &err)?
                };
                match top_mut(&mut stack, d, &mut budget, &err)? {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err(err(format!("APPEND(S) at byte {at} without a list"))),
                }
            }
            b'}' => stack.push(Item::V(Value::Dict(vec![]), 1)),
            b'd' | b's' | b'u' => {
                let (items, d) = match op {
                    b's' => {
                        let (v, dv) = pop(&mut stack, &err)?;
                        let (k, dk) = pop(&mut stack, &err)?;
                        (vec![k, v], dv.max(dk))
                    }
                    _ => pop_mark(&mut stack, &err)?,
                };
                if items.len() % 2 != 0 {
                    return Err(err(format!("DICT/SETITEM(S) at byte {at} with an odd number of items")));
                }
                let mut it = items.into_iter();
                let mut pairs = vec![];
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                if op == b'd' {
                    stack.push(Item::V(Value::Dict(pairs), deeper(d, at)?));
                } else {
                    match top_mut(&mut stack, d, &mut budget, &err)? {
                        Some(Value::Dict(dict)) => dict.extend(pairs),
                        _ => return Err(err(format!("SETITEM(S) at byte {at} without a dict"))),
                    }
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
                stack.push(Item::V(Value::Global(module, name), 0));
            }
            0x93 => {
                let (name, _) = pop(&mut stack, &err)?;
                let (module, _) = pop(&mut stack, &err)?;
                match (module.as_str(), name.as_str()) {
                    (Some(m), Some(n)) => stack.push(Item::V(Value::Global(m.to_string(), n.to_string()), 0)),
                    _ => return Err(err(format!("STACK_GLOBAL at byte {at} without two strings"))),
                }
            }
            b'R' | 0x81 => {
                // REDUCE `f(*args)` and NEWOBJ `cls.__new__(cls, *args)`: recorded, not called
                let (args, da) = pop(&mut stack, &err)?;
                let (f, df) = pop(&mut stack, &err)?;
                let args = match args {
                    Value::Tuple(a) => a,
                    // a memoised argument tuple: its items are copied (shared ones by pointer)
                    Value::Shared(rc) if matches!(rc.as_ref(), Value::Tuple(_)) => rc.as_tuple().unwrap_or_default().iter().map(|x| counted_clone(x, &mut budget, &err)).collect::<Result<_>>()?,
                    other => vec![other],
                };
                // OrderedDict() becomes an empty dict right away
                if is_ordered_dict(&f) && args.is_empty() {
                    stack.push(Item::V(Value::Dict(vec![]), 1));
                } else {
                    stack.push(Item::V(Value::Call(Box::new(f), args), deeper(da.max(df), at)?));
                }
            }
            b'b' => {
                let (state, ds) = pop(&mut stack, &err)?;
                let (obj, d) = pop(&mut stack, &err)?;
                // A dict's state (a state_dict's `_metadata`) does not change its items.
                match obj.get() {
                    Value::Dict(_) => stack.push(Item::V(obj, d)),
                    _ => stack.push(Item::V(Value::Build(Box::new(obj), Box::new(state)), deeper(d.max(ds), at)?)),
                }
            }
            b'Q' => {
                let (pid, d) = pop(&mut stack, &err)?;
                stack.push(Item::V(Value::PersId(Box::new(pid)), deeper(d, at)?));
            }
            b'q' | b'r' | 0x94 => {
                let i = match op {
                    b'q' => take!(1)[0] as u32,
                    b'r' => {
                        let b = take!(4);
                        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                    }
                    _ => memo.len() as u32,
                };
                let shared = share_top(&mut stack, &err)?;
                memo.insert(i, shared);
            }
            b'h' | b'j' => {
                let i = if op == b'h' {
                    take!(1)[0] as u32
                } else {
                    let b = take!(4);
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                };
                let (v, d) = memo.get(&i).cloned().ok_or_else(|| err(format!("memo {i} read at byte {at} before it was written")))?;
                stack.push(Item::V(Value::Shared(v), d));
            }
            b'0' => {
                stack.pop();
            }
            b'1' => {
                pop_mark(&mut stack, &err)?;
            }
            b'2' => {
                let (v, d) = share_top(&mut stack, &err)?;
                stack.push(Item::V(Value::Shared(v), d));
            }
            other => return Err(Error::UnknownPickleOpcode { file: what.to_string(), opcode: other, offset: at }),
        }
    }
}

fn is_ordered_dict(f: &Value) -> bool {
    matches!(f.get(), Value::Global(m, n) if m == "collections" && n == "OrderedDict")
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

/// Hostile pickles (issue 14): each is a typed error or the right result, quickly and in bounded
/// memory and stack.
#[cfg(test)]
mod hostile {
    use super::*;

    #[test]
    fn lengths_beyond_the_data_are_truncation_not_overflow() {
        for op in [0x8du8, 0x8e] {
            // BINUNICODE8 / BINBYTES8 with a length of u64::MAX, and one just past the end
            for n in [u64::MAX, u64::MAX - 1, 3] {
                let mut p = vec![0x80, 4, op];
                p.extend(n.to_le_bytes());
                p.extend(b"ab.");
                let e = read(&p, 0, "f.pkl").err().unwrap_or_else(|| panic!("opcode {op:#x} length {n} read fine"));
                assert!(matches!(e, Error::Truncated { .. }), "{e}");
            }
        }
        // BINUNICODE / BINBYTES with u32::MAX
        for op in [b'X', b'B'] {
            let mut p = vec![0x80, 2, op];
            p.extend(u32::MAX.to_le_bytes());
            p.push(b'.');
            assert!(matches!(read(&p, 0, "f.pkl"), Err(Error::Truncated { .. })));
        }
        assert!(matches!(read(b"..", 7, "f.pkl"), Err(Error::Truncated { .. })));
    }

    #[test]
    fn a_million_deep_nesting_is_refused_not_a_stack_overflow() {
        // TUPLE1 around one int, a million times (1 MB)
        let mut p = vec![0x80, 2, b'K', 1];
        p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        p.push(b'.');
        let e = read(&p, 0, "deep.pkl").err().unwrap();
        assert!(e.to_string().contains("nest deeper than 256"), "{e}");
        // MARK ... TUPLE, and lists appended into lists
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b'(', 500_000));
        p.extend(std::iter::repeat_n(b't', 500_000));
        p.push(b'.');
        assert!(read(&p, 0, "deep.pkl").err().unwrap().to_string().contains("nest deeper"));
        let mut p = vec![0x80, 2, b']'];
        for _ in 0..300_000 {
            p.extend(b"]");
        }
        for _ in 0..300_000 {
            p.extend(b"a");
        }
        p.push(b'.');
        assert!(read(&p, 0, "deep.pkl").err().unwrap().to_string().contains("nest deeper"));
        // the limit itself is fine
        let mut p = vec![0x80, 2, b'K', 1];
        p.extend(std::iter::repeat_n(0x85u8, MAX_DEPTH as usize));
        p.push(b'.');
        let (mut v, _) = read(&p, 0, "ok.pkl").unwrap();
        let mut depth = 0;
        while let Value::Tuple(t) = v {
            v = t.into_iter().next().unwrap();
            depth += 1;
        }
        assert_eq!((depth, v), (MAX_DEPTH as usize, Value::Int(1)));
    }

    /// `]q\x00` + `(h\x00h\x00lq\x00` x 24: each list holds the previous one twice. Copied, that
    /// is 2^25 lists (6.4 GB); shared, 25.
    #[test]
    fn memo_references_are_shared_not_copied() {
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..24 {
            p.extend(b"(h\x00h\x00lq\x00");
        }
        p.push(b'.');
        assert!(p.len() < 270);
        let (v, _) = read(&p, 0, "bomb.pkl").unwrap();
        let mut v = v.get();
        for level in 0..24 {
            let Value::List(items) = v else { panic!("level {level}: {v:?}") };
            let (Value::Shared(a), Value::Shared(b)) = (&items[0], &items[1]) else { panic!("level {level}: not shared") };
            assert!(Rc::ptr_eq(a, b), "level {level}: the two references are copies");
            v = a.as_ref();
        }
        assert_eq!(*v, Value::List(vec![]));
        assert!(v.brief().len() < 210);
        // DUP then APPEND doubling the same way
        let mut p = b"\x80\x02]".to_vec();
        for _ in 0..40 {
            p.extend(b"2\x85");
        }
        p.push(b'.');
        let (v, _) = read(&p, 0, "dup.pkl").unwrap();
        assert!(v.brief().len() < 210);
    }

    /// A memoised container changed afterwards is copied once (copy on write); copies of copies
    /// are charged to a budget proportional to the input, so they end in a typed error.
    #[test]
    fn copy_on_write_is_bounded() {
        // a memoised list, appended to: the usual protocol-2 shape, read right
        let (v, _) = read(b"\x80\x02]q\x00(K\x01K\x02e.", 0, "ok.pkl").unwrap();
        assert_eq!(v, Value::List(vec![Value::Int(1), Value::Int(2)]));
        // a list of 100k ints, then memoise + append 100k times: each append copies the list
        let mut p = b"\x80\x02](".to_vec();
        for _ in 0..100_000 {
            p.extend(b"K\x01");
        }
        p.push(b'e');
        for _ in 0..100_000 {
            p.extend(b"q\x00K\x01a");
        }
        p.push(b'.');
        let t = std::time::Instant::now();
        let e = read(&p, 0, "cow.pkl").err().unwrap();
        assert!(e.to_string().contains("memo bomb"), "{e}");
        assert!(t.elapsed().as_secs() < 60);
    }
}
