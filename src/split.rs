//! Splitting an operator at the channel-chunk boundaries of its tensors (see [`crate::plan`]): the
//! result is a list of operators, each of whose views lies inside one chunk, that together compute
//! exactly what the original computes. How each operator splits lives in its own module
//! ([`crate::ops::Operator::split`]); this applies it until nothing is left to split (a
//! concatenation lowers to copies, which may split again).

use crate::error::Result;
use crate::graph::Node;
use crate::ops::Op;

/// Splits `node` so that each resulting view lies in one chunk. `cuts(t)` lists the channel
/// indices where tensor `t` is cut. A node that needs no split comes back as it is.
pub fn split_node(node: &Node, cuts: &dyn Fn(usize) -> Vec<usize>) -> Result<Vec<Node>> {
    let pieces = match node.op.split(cuts, &node.name)? {
        None => return Ok(vec![node.clone()]),
        Some(p) if p.len() == 1 && p[0].kind() == node.op.kind() => return Ok(vec![node.clone()]),
        Some(p) => p,
    };
    let mut out = vec![];
    for (i, op) in pieces.into_iter().enumerate() {
        let piece = Node { name: format!("{}#{}", node.name, i), op: Op(op) };
        out.extend(split_node(&piece, cuts)?);
    }
    Ok(out)
}
