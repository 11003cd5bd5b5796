//! The types of a cell's variables, read from the MIR rustc writes for the cell crate
//! (`--emit mir`). MIR declares each local with its full type, in paths that code outside the
//! crate can write (`std::collections::HashMap<std::string::String, u8>`); evcxr's generated
//! code hands each variable it keeps to `VariableStore::put_variable`, so the locals passed
//! there are the variables. MIR text is a format for people: what is not found here is left
//! without a type (`variable_types` then keeps nothing wrong).

use std::collections::HashMap;

/// evcxr's store call, as MIR shows it (the generic argument follows).
const STORE_CALL: &str = "VariableStore::put_variable::<";


/// The type of each variable stored by `VariableStore::put_variable` in `mir`, by name. A
/// variable whose store cannot be reached (the cell ends in a `panic!`, so rustc leaves the
/// store out) is never kept; its type is still found, from its debug information
/// (`debug n => _3;`), so that the cell runs and fails as it should.
pub(crate) fn stored_types(mir: &str) -> HashMap<&str, String> {
    let mut stored = HashMap::new();
    let mut declared = HashMap::new();
    for body in bodies(mir) {
        let (body_stored, body_declared) = types_in_body(body);
        stored.extend(body_stored);
        declared.extend(body_declared);
    }
    for (name, type_name) in declared {
        stored.entry(name).or_insert(type_name);
    }
    stored
}

/// The bodies of the functions (and constants) in `mir`: each starts on a line of its own at
/// the margin and ends with a `}` alone at the margin. Locals (`_12`) are numbered per body.
fn bodies(mir: &str) -> Vec<&str> {
    let mut bodies = Vec::new();
    let mut start = None;
    let mut offset = 0;
    for line in mir.split_inclusive('\n') {
        let starts_body = !line.starts_with([' ', '}', '/', '\n']) && line.trim_end().ends_with('{');
        if starts_body {
            start = Some(offset);
        } else if line.trim_end() == "}" {
            if let Some(begin) = start.take() {
                bodies.push(&mir[begin..offset + line.len()]);
            }
        }
        offset += line.len();
    }
    bodies
}

/// In one body: the types of the variables stored, and of every variable by its debug
/// information (the last one of a name).
fn types_in_body(body: &str) -> (HashMap<&str, String>, HashMap<&str, String>) {
    let mut local_types: HashMap<&str, &str> = HashMap::new();
    let mut constants: HashMap<&str, &str> = HashMap::new();
    for line in body.lines() {
        let line = line.trim();
        // `let mut _12: std::vec::Vec<u64>;`
        if let Some(declaration) = line.strip_prefix("let ") {
            let declaration = declaration.strip_prefix("mut ").unwrap_or(declaration);
            if let Some((local, type_name)) = declaration.split_once(": ") {
                local_types.insert(local, type_name.strip_suffix(';').unwrap_or(type_name));
            }
        }
        // `_11 = const "n";`
        if let Some((local, value)) = line.split_once(" = const \"") {
            if let Some(text) = value.strip_suffix("\";") {
                constants.insert(local.trim(), text);
            }
        }
    }
    let type_of = |place: &str| match place.strip_prefix('(').and_then(|inner| inner.strip_suffix(')')) {
        // A field of the cell's future: `(((*_80) as variant#4).10: std::vec::Vec<u64>)`.
        Some(projection) => projection.rsplit_once(": ").map(|(_, type_name)| type_name.to_owned()),
        None => local_types.get(place).map(|type_name| (*type_name).to_owned()),
    };
    let mut declared = HashMap::new();
    for line in body.lines() {
        // `debug n => _3;`
        let Some((name, place)) = line.trim().strip_prefix("debug ").and_then(|rest| rest.split_once(" => ")) else {
            continue;
        };
        if let Some(type_name) = type_of(place.strip_suffix(';').unwrap_or(place)) {
            declared.insert(name, type_name);
        }
    }
    let mut types = HashMap::new();
    for line in body.lines() {
        let Some(start) = line.find(STORE_CALL) else { continue };
        let Some(arguments) = call_arguments(&line[start + STORE_CALL.len()..]) else { continue };
        let [_, name, value] = arguments.as_slice() else { continue };
        let name = match name.strip_prefix("const \"").and_then(|text| text.strip_suffix('"')) {
            Some(text) => text,
            None => match constants.get(operand_place(name)) {
                Some(text) => text,
                None => continue,
            },
        };
        if let Some(type_name) = type_of(operand_place(value)) {
            types.insert(name, type_name);
        }
    }
    (types, declared)
}

/// The place an operand reads: `move _12` → `_12`, `copy (x.0: T)` → `(x.0: T)`.
fn operand_place(operand: &str) -> &str {
    let operand = operand.trim();
    operand.strip_prefix("move ").or_else(|| operand.strip_prefix("copy ")).unwrap_or(operand)
}

/// The arguments of the call that follows its generic arguments (`Vec<u64>>(a, b, c) -> ...`),
/// split at the commas outside brackets.
fn call_arguments(after_generics: &str) -> Option<Vec<&str>> {
    // The generic argument ends at the `>` that closes `::<`; rustc writes `->` only in fn
    // pointer types, whose `>` is not a bracket.
    let mut depth = 1i32;
    let mut previous = ' ';
    let mut open = None;
    for (index, character) in after_generics.char_indices() {
        match character {
            '<' => depth += 1,
            '>' if previous != '-' => {
                depth -= 1;
                if depth == 0 {
                    open = Some(index + 1);
                    break;
                }
            }
            _ => {}
        }
        previous = character;
    }
    let rest = after_generics[open?..].strip_prefix('(')?;
    let mut arguments = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut previous = ' ';
    for (index, character) in rest.char_indices() {
        match character {
            '(' | '[' | '<' | '{' => depth += 1,
            ')' if depth == 0 => {
                arguments.push(rest[start..index].trim());
                return Some(arguments);
            }
            '>' if previous == '-' => {}
            ')' | ']' | '>' | '}' => depth -= 1,
            ',' if depth == 0 => {
                arguments.push(rest[start..index].trim());
                start = index + 1;
            }
            _ => {}
        }
        previous = character;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_locals_passed_to_the_store() {
        let mir = r#"fn other() -> () {
    let mut _11: (u32, bool);
    let mut _12: (u32, bool);
}

fn run_user_code_3::{closure#0}::{closure#0}(_1: Pin<&mut {async block@src/lib.rs:10:15: 10:20}>) -> Poll<()> {
    let _20: std::string::String;
    scope 1 {
        debug late => _20;
    }
    let mut _10: &mut evcxr_internal_runtime::VariableStore;
    let mut _11: &str;
    let mut _12: std::vec::Vec<u64>;
    let _13: ();
    let mut _14: &mut evcxr_internal_runtime::VariableStore;
    let mut _15: std::collections::HashMap<std::string::String, fn(i32) -> i32>;
        _11 = const "n";
        _12 = move _7;
        _9 = VariableStore::put_variable::<Vec<u64>>(move _10, move _11, move _12) -> [return: bb5, unwind: bb9];
        _13 = VariableStore::put_variable::<HashMap<String, fn(i32) -> i32>>(move _14, const "m", move _15) -> [return: bb6, unwind: bb9];
        _16 = VariableStore::put_variable::<Duration>(move _17, const "d", move (((*_80) as variant#4).1: std::time::Duration)) -> [return: bb7, unwind: bb9];
}
"#;
        let types = stored_types(mir);
        assert_eq!(types["n"], "std::vec::Vec<u64>");
        assert_eq!(types["m"], "std::collections::HashMap<std::string::String, fn(i32) -> i32>");
        assert_eq!(types["d"], "std::time::Duration");
        // Never stored (after a `panic!`): typed by its debug information.
        assert_eq!(types["late"], "std::string::String");
    }
}
