//! A `return` in a cell's own code, outside any function, closure or async block the cell
//! defines. evcxr runs a cell as the body of a function that ends by putting the variables the
//! cell used or made back in its store; a `return` skips that, so they are lost without a word,
//! and the next cell, finding one missing, aborts the user process with every variable and
//! task in it. The kernel refuses such a cell before it runs. (`?` is evcxr's own early exit,
//! handled there; `break` and `continue` outside a loop do not compile.)

use crate::is_complete::walk_code;

/// The byte offset of the first `return` at the cell's own level, if any, in the code whose
/// [`tokens`] these are.
pub(crate) fn cell_level_return(tokens: &[(usize, &str)]) -> Option<usize> {
    // For each open bracket: whether it is the `{` of a body (function, closure, async block,
    // `macro_rules!`): a `return` inside belongs to that, not to the cell.
    let mut open: Vec<bool> = Vec::new();
    // The bracket depth of an item (`fn name`, `macro_rules!`) whose body `{` is still to come.
    let mut item_at: Option<usize> = None;
    // A closure's `|..|` (and `-> Type`) were read and a block body follows.
    let mut closure_block_next = false;
    // The depths of closures whose body is an expression without braces (`|x| x + 1`,
    // `move || loop { .. }`): each lasts until a `,` or `;` at its depth or its bracket closes.
    let mut closure_expressions: Vec<usize> = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        let (offset, token) = tokens[index];
        let previous = index.checked_sub(1).map(|before| tokens[before].1);
        let depth = open.len();
        match token {
            "{" | "(" | "[" => {
                let body = token == "{"
                    && (item_at == Some(depth)
                        || closure_block_next
                        || previous == Some("async")
                        || (previous == Some("move") && index >= 2 && tokens[index - 2].1 == "async"));
                if body {
                    item_at = None;
                }
                if token == "{" {
                    closure_block_next = false;
                }
                open.push(body);
            }
            "}" | ")" | "]" => {
                open.pop();
                closure_expressions.retain(|&at| at <= open.len());
                item_at = item_at.filter(|&at| at <= open.len());
            }
            ";" | "," => {
                closure_expressions.retain(|&at| at < depth);
                if token == ";" && item_at == Some(depth) {
                    item_at = None; // a declaration without a body (`fn f();` in a trait)
                }
            }
            // `fn` before a name; `fn(u32) -> u32` is a pointer type, with no body.
            "fn" if tokens.get(index + 1).is_some_and(|(_, next)| next.starts_with(is_word_char)) => {
                item_at = Some(depth);
            }
            "macro_rules" => item_at = Some(depth),
            "return" if !open.contains(&true) && closure_expressions.is_empty() => return Some(offset),
            "|" | "||" if starts_closure(previous) => {
                if token == "|" {
                    // Skip the parameters to the closing `|`.
                    index += 1;
                    while index < tokens.len() && tokens[index].1 != "|" {
                        index += 1;
                    }
                }
                // A return type (`-> T`) needs a block body.
                closure_block_next = matches!(tokens.get(index + 1), Some((_, "{" | "->")));
                if !closure_block_next {
                    closure_expressions.push(depth);
                }
            }
            _ => {}
        }
        index += 1;
    }
    None
}

/// Whether a `|` after `previous` starts a closure rather than being an "or".
fn starts_closure(previous: Option<&str>) -> bool {
    match previous {
        None => true,
        Some(token) => matches!(
            token,
            "(" | "[" | "{" | "}" | "," | ";" | "=" | ">" | ":" | "&" | "*" | "!" | "mut" | "move" | "async"
                | "return"
        ),
    }
}

pub(crate) fn is_word_char(character: char) -> bool {
    character.is_alphanumeric() || character == '_'
}

/// Words (identifiers and keywords), `||`, `->` and single punctuation characters, with byte
/// offsets; strings, characters and comments are left out.
pub(crate) fn tokens(code: &str) -> Vec<(usize, &str)> {
    let mut characters = Vec::new();
    walk_code(code, |offset, character| {
        characters.push((offset, character));
        true
    });
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < characters.len() {
        let (start, character) = characters[index];
        let is_word = is_word_char;
        if character.is_whitespace() {
            index += 1;
            continue;
        }
        let mut end = index + 1;
        if is_word(character) {
            while end < characters.len() && is_word(characters[end].1) && characters[end].0 == characters[end - 1].0 + characters[end - 1].1.len_utf8() {
                end += 1;
            }
        } else if let Some(&(next_offset, next)) = characters.get(index + 1) {
            let adjacent = next_offset == start + character.len_utf8();
            if adjacent && matches!((character, next), ('|', '|') | ('-', '>')) {
                end += 1;
            }
        }
        let (last_offset, last) = characters[end - 1];
        tokens.push((start, &code[start..last_offset + last.len_utf8()]));
        index = end;
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(code: &str) -> Option<&str> {
        cell_level_return(&tokens(code)).map(|offset| &code[offset..offset + "return".len()])
    }

    #[test]
    fn a_return_in_the_cells_own_code_is_found() {
        assert_eq!(found("let b = 1;\nif b > 0 { return; }\nprintln!(\"after\");"), Some("return"));
        assert_eq!(cell_level_return(&tokens("return 5;")), Some(0));
        assert_eq!(found("for x in 0..3 { if x == 1 { return Ok(()); } }"), Some("return"));
        assert_eq!(found("tokio::select! { _ = a => { return; } }"), Some("return"));
        let code = "let f = |x| x + 1;\nmatch f(1) { 2 => return, _ => {} }";
        assert_eq!(cell_level_return(&tokens(code)), code.find("return"));
    }

    #[test]
    fn a_return_inside_what_the_cell_defines_is_its_own() {
        for code in [
            "fn f(x: u32) -> u32 { if x > 1 { return x; } 0 }",
            "async fn g() -> Result<(), String> { return Ok(()); }\ng().await.unwrap();",
            "let h = tokio::spawn(async move { return 1; });",
            "let c = |x: u32| { return x; };",
            "let c = move |x: u32| -> u32 { if x > 1 { return x; } 0 };",
            "let v: Vec<u32> = (0..3).map(|x| { return x * 2; }).collect();",
            "let c = || { return 1; };",
            "let a = async { return 2; };",
            "impl Foo { fn get(&self) -> u32 { return self.0; } }",
            "trait T { fn f(&self) -> u32 { return 1; } }",
            "macro_rules! bail { () => { return; }; }",
            "let f: fn() -> u32 = g;\nfn g() -> u32 { return 3; }",
            "let s = \"return\"; // return\n/* return */ let r#type = 1;",
            "let returned = 1; let x = returned_value(returned);",
            "let ok = a || b; let c = |x| x;",
            "struct S { f: fn() -> u32 }\nfn make() -> S { return S { f: || 1 }; }",
            "fn sum(xs: [u32; 3]) -> u32 { return xs.iter().sum(); }",
            "fn grid() -> [[u8; 3]; 3] { return [[0; 3]; 3]; }",
            "async fn worker(rx: Receiver<[u8; 4]>) { return; }",
            "fn f() where [(); 3]: Sized { return; }",
            "std::thread::spawn(move || loop { if done() { return; } });",
            "let v: Vec<u32> = xs.iter().map(|x| if *x > 1 { return 1; } else { 0 }).collect();",
            "let f = |o: Option<u32>| match o { Some(v) => v, None => return 0 };",
            "let g = || unsafe { return 1; };",
            "let h = |x: u32| return x + 1;",
            "apply(&|x| { return x + 1; });",
            "call(&mut |x| { if x { return; } });",
        ] {
            assert_eq!(cell_level_return(&tokens(code)), None, "{code}");
        }
    }

    #[test]
    fn a_closure_without_braces_does_not_hide_a_later_block() {
        for code in [
            "for y in v.iter().map(|x| x + 1) { if y > 2 { return; } }",
            "let f = |x| x + 1;\nif f(1) > 1 { return; }",
            "let p: fn() -> u32 = if a { return; } else { g };",
            "let arr = [0u8; 4];\nif arr[0] == 0 { return; }",
        ] {
            assert_eq!(cell_level_return(&tokens(code)), code.find("return"), "{code}");
        }
    }
}
